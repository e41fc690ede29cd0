"""Reading the reports given to ``conformance merge``, naming whose each is, and copying their pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance import registry
from conformance.roster.reports import copy_beside, find_reports, name_student, read_report
from conformance.vocabulary import UsageError

PROTOCOLS = registry.protocols()


def _report(*outcomes: str, student: str | None = None) -> dict[str, Any]:
    ids = ("echo.tcp.round-trip", "echo.tcp.half-close")
    run = {"command": "conformance run", **({"student": student} if student else {})}
    cases = [{"id": i, "protocol": "echo", "level": "MUST", "outcome": o} for i, o in zip(ids, outcomes, strict=False)]
    return {"cases": cases, "summary": {"total": len(cases)}, "targets": {}, "run": run}


def _write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_a_report_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.json", _report("passed", "failed"))
    assert [case["outcome"] for case in read_report(path)["cases"]] == ["passed", "failed"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "r.json: No such file or directory"),
        ("{not json", "r.json: not JSON (Expecting property name"),
        ("\xff\xfe", "r.json: not JSON"),
        ("[]", "r.json: not a 'conformance run --json' report (no summary)"),
        ('{"summary": {}, "cases": {}}', "(no list of cases)"),
        ('{"summary": {}, "cases": [{"level": "MUST"}]}', "(a case without an id)"),
        (
            '{"summary": {}, "cases": [{"id": "x", "level": "MUST", "outcome": "green"}]}',
            "(case 'x' has no known level and outcome)",
        ),
    ],
)
def test_a_missing_unreadable_or_foreign_file_is_one_line_naming_it(
    tmp_path: Path, content: str | None, said: str
) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(UsageError) as raised:
        read_report(path)
    assert str(raised.value).startswith(str(path)) and said in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_student_is_the_recorded_name_else_the_folder_of_a_protocol_file_else_the_stem(tmp_path: Path) -> None:
    assert name_student(tmp_path / "x" / "echo.json", _report(student="ada"), PROTOCOLS) == "ada"
    assert name_student(tmp_path / "bo" / "echo.json", _report(), PROTOCOLS) == "bo"
    assert name_student(tmp_path / "runs" / "cy.json", _report(), PROTOCOLS) == "cy"
    with pytest.raises(UsageError, match=r"grades\.csv.*conformance run --student NAME"):
        name_student(tmp_path / "grades.csv.json", _report(), PROTOCOLS)


def test_one_students_case_from_two_reports_is_an_error(tmp_path: Path) -> None:
    first = _write(tmp_path / "a" / "ada" / "echo.json", _report("passed"))
    second = _write(tmp_path / "b" / "ada.json", _report("failed"))
    with pytest.raises(UsageError, match=r"b/ada\.json: ada already has echo\.tcp\.round-trip from .*a/ada/echo\.json"):
        find_reports([first, second], PROTOCOLS)
    again = _write(tmp_path / "c" / "ada" / "echo.json", {**_report(), "cases": []})
    with pytest.raises(UsageError, match=r"ada already has echo\.json"):
        find_reports([first, again], PROTOCOLS)


def test_reports_and_their_pages_are_copied_where_the_matrix_links(tmp_path: Path) -> None:
    with_page = _write(tmp_path / "in" / "ada" / "echo.json", _report("passed"))
    with_page.with_suffix(".html").write_text("<p>ada</p>")
    without = _write(tmp_path / "in" / "bo.json", _report("failed"))
    found = find_reports([with_page, without], PROTOCOLS)
    assert [(f.sheet.student, f.sheet.stem, f.sheet.page) for f in found] == [
        ("ada", "echo", "html"),
        ("bo", "bo", "json"),
    ]
    out = tmp_path / "out"
    for report in found:
        copy_beside(report, out)
        copy_beside(report, out)
    assert (out / "ada" / "echo.html").read_text() == "<p>ada</p>"
    assert json.loads((out / "bo" / "bo.json").read_text()) == _report("failed")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == [
        "ada/echo.html",
        "ada/echo.json",
        "bo/bo.json",
    ]
    # Merging grade's own output again: the files are already in place and stay as they are.
    for report in find_reports([out / "ada" / "echo.json"], PROTOCOLS):
        copy_beside(report, out)
    assert (out / "ada" / "echo.html").read_text() == "<p>ada</p>"


def test_a_roster_row_without_a_report_is_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main

    roster = tmp_path / "roster.csv"
    roster.write_text("student,protocol,address\nada,echo,127.0.0.1:7\nbo,echo,127.0.0.1:8\nbo,tftp,127.0.0.1:9\n")
    ada = _write(tmp_path / "reports" / "ada" / "echo.json", _report("passed", "failed"))
    assert main(["merge", str(ada), "--roster", str(roster), "--out", str(tmp_path / "class")]) == 1
    said = capsys.readouterr().out
    assert "bo echo: no report" in said and "bo tftp: no report" in said and "ada" not in said.split("\n", 1)[1]
    grades = (tmp_path / "class" / "grades.csv").read_text().splitlines()
    # bo's echo row is judged on the cases the class's echo reports ran; tftp, which none ran, on all of them.
    assert grades[0].startswith("student,score,maximum,echo.tcp.round-trip,echo.tcp.half-close,tftp.")
    assert grades[1].startswith("ada,1,2,1,0,,")
    assert grades[2].startswith("bo,0,") and grades[2].count("not run") == 2 + len(PROTOCOLS["tftp"].cases)
    assert "no report" in (tmp_path / "class" / "bo" / "tftp.log").read_text()
    # With no report at all, the roster alone lists every row as not run; with neither, nothing to merge.
    assert main(["merge", "--roster", str(roster), "--out", str(tmp_path / "empty")]) == 1
    assert main(["merge", "--out", str(tmp_path / "none")]) == 2
    assert "no report to merge" in capsys.readouterr().err
