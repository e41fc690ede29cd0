"""The roster file, the gradebook made from run records, grades.csv and the class matrix page."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conformance import registry
from conformance.grading.rubric import DEFAULT
from conformance.model import select_cases
from conformance.roster.grade import Progress, RunRecord
from conformance.roster.gradebook import NOT_RUN, Gradebook, build_gradebook, grades_csv
from conformance.roster.matrix import render_matrix
from conformance.roster.roster import Row, parse_roster
from conformance.vocabulary import UsageError

PROTOCOLS = registry.protocols()
HOSTILE = '<script>alert("x")</script>'


def parse(text: str, base: Path = Path(".")) -> list[Row]:
    return parse_roster(text, source="class.csv", base=base, protocols=PROTOCOLS)


def test_a_good_roster(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    rows = parse(
        "Student,Protocol,Command,Address,Directory\n"
        'alice,echo,"python server.py {port}",,alice\n'
        "\n"
        "alice,tftp,,127.0.0.1:6969,\n"
        "bob,echo,python s.py {port},,\n",
        tmp_path,
    )
    assert [(r.student, r.protocol, r.line) for r in rows] == [
        ("alice", "echo", 2),
        ("alice", "tftp", 4),
        ("bob", "echo", 5),
    ]
    assert rows[0].directory == tmp_path / "alice" and rows[2].directory is None
    assert rows[0].target_words() == ["--target-cmd", "echo=python server.py {port}"]
    assert rows[1].target_words() == ["--target", "tftp=127.0.0.1:6969"]


def test_columns_in_any_order_and_only_those_needed() -> None:
    rows = parse("address,protocol,student\n127.0.0.1:7,echo,carol\nembedded,echo,reference\n")
    assert rows[0].target.port == 7
    assert rows[1].target_words() == ["--target", "echo=embedded"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "class.csv is empty"),
        ("student,protocol\nalice,echo\n", "line 1: the header"),
        ("student,protocol,command,colour\n", "line 1: the header"),
        ("student,protocol,command,command\n", "line 1: the header"),
        ("student,protocol,command\n", "has a header but no rows"),
        ("student,protocol,command\nalice,echo\n", "line 2: 2 fields where the header has 3"),
        ("student,protocol,command\nalice,gopher,x {port}\n", "line 2: unknown protocol 'gopher'"),
        (
            "student,protocol,command\nalice,echo,python s.py\n",
            "line 2: --target-cmd echo=...: the command has no {port}",
        ),
        ("student,protocol,command,address\nalice,echo,x {port},127.0.0.1:7\n", "line 2: give a command or an address"),
        ("student,protocol,command,address\nalice,echo,,\n", "line 2: give a command or an address"),
        ("student,protocol,address\nalice,echo,localhost\n", "line 2: --target 'echo=localhost': expected HOST:PORT"),
        ("student,protocol,command\n../x,echo,x {port}\n", "line 2: student '../x' must be letters"),
        ("student,protocol,command\n,echo,x {port}\n", "line 2: student '' must be letters"),
        ("student,protocol,command\nindex.html,echo,x {port}\n", "line 2: student 'index.html' would be a folder"),
        ("student,protocol,command,directory\na,echo,x {port},nowhere\n", "line 2: directory 'nowhere' is not"),
        ("student,protocol,address,directory\na,echo,127.0.0.1:7,.\n", "line 2: a directory is where a command runs"),
        (
            "student,protocol,command\na,echo,x {port}\nb,echo,y {port}\na,echo,z {port}\n",
            "line 4: a has two echo rows (lines 2 and 4)",
        ),
    ],
)
def test_a_bad_roster_is_one_line_naming_where(text: str, said: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(text)
    assert said in str(raised.value)
    assert "\n" not in str(raised.value)


def _row(student: str, protocol: str) -> Row:
    return parse(f"student,protocol,command\n{student},{protocol},x {{port}}\n")[0]


def _report(*cases: tuple[str, str, str]) -> dict[str, Any]:
    return {"cases": [{"id": i, "level": level, "outcome": outcome, "message": HOSTILE} for i, level, outcome in cases]}


ECHO = ("echo.tcp.round-trip", "echo.tcp.half-close")


def _book(tmp_path: Path) -> Gradebook:
    records = [
        RunRecord(_row("ann", "echo"), 0, 1.0, _report((ECHO[0], "MUST", "passed"), (ECHO[1], "MUST", "passed")), ""),
        RunRecord(_row("ben", "echo"), 1, 1.0, _report((ECHO[0], "MUST", "passed"), (ECHO[1], "MUST", "failed")), ""),
        RunRecord(_row("ben", "chat"), 1, 1.0, _report(("chat.join", "MUST", "unsupported")), ""),
        RunRecord(_row("cat", "echo"), 2, 1.0, None, "exit status 2: conformance: never came up"),
    ]
    selected = {"echo": select_cases([PROTOCOLS["echo"]], ECHO), "chat": []}
    order = [case.id for protocol in PROTOCOLS.values() for case in protocol.cases]
    return build_gradebook([record.sheet() for record in records], DEFAULT, selected, order)


def test_the_gradebook_scores_each_student_over_all_their_rows(tmp_path: Path) -> None:
    book = _book(tmp_path)
    assert book.case_ids == ("chat.join", "echo.tcp.round-trip", "echo.tcp.half-close")
    by_student = {grade.student: grade for grade in book.students}
    assert [(g.student, g.score.points, g.score.max_points) for g in book.students] == [
        ("ann", 2, 2),
        ("ben", 1, 2),
        # Never came up: the class's maximum, nothing earned.
        ("cat", 0, 2),
    ]
    assert by_student["cat"].notes == ("echo: exit status 2: conformance: never came up",)
    assert by_student["cat"].cells[ECHO[0]].outcome == NOT_RUN
    assert by_student["cat"].cells[ECHO[0]].link == "cat/echo.log"
    assert by_student["ben"].cells[ECHO[1]].link == "ben/echo.html#case-echo.tcp.half-close"
    rate = book.pass_rate(ECHO[1])
    assert (rate.passed, rate.judged, rate.percent) == (1, 2, 50.0)
    assert book.pass_rate("chat.join").percent is None


def test_grades_csv_has_points_or_outcomes(tmp_path: Path) -> None:
    rows = list(csv.reader(io.StringIO(grades_csv(_book(tmp_path)))))
    assert rows == [
        ["student", "score", "maximum", "chat.join", "echo.tcp.round-trip", "echo.tcp.half-close", "notes"],
        ["ann", "2", "2", "", "1", "1", ""],
        ["ben", "1", "2", "unsupported", "1", "0", ""],
        ["cat", "0", "2", "", NOT_RUN, NOT_RUN, "echo: exit status 2: conformance: never came up"],
    ]


class Cells(HTMLParser):
    """The matrix's cells (student, case, outcome, link), its pass-rate row and every URL the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.student = ""
        self.cells: list[tuple[str, str, str]] = []
        self.links: list[str] = []
        self.rates: dict[str, str] = {}
        self.loads: list[str] = []
        self._rate: str | None = None
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-student"):
            self.student = found["data-student"] or ""
        if tag == "td" and "data-outcome" in found:
            self.cells.append((self.student, found["data-case"] or "", found["data-outcome"] or ""))
        if tag == "td" and "rate" in (found.get("class") or "").split():
            self._rate = found["data-case"]
        if tag == "a":
            self.links.append(found["href"] or "")
        self.loads += [value or "" for name, value in attrs if name == "src"]
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        if self._rate is not None and data.strip():
            self.rates[self._rate] = data.strip()
            self._rate = None


def test_the_class_matrix(tmp_path: Path) -> None:
    page = render_matrix(_book(tmp_path), {"roster": HOSTILE})
    assert HOSTILE not in page
    parsed = Cells()
    parsed.feed(page)
    assert parsed.cells == [
        ("ann", ECHO[0], "passed"),
        ("ann", ECHO[1], "passed"),
        ("ben", "chat.join", "unsupported"),
        ("ben", ECHO[0], "passed"),
        ("ben", ECHO[1], "failed"),
        ("cat", ECHO[0], NOT_RUN),
        ("cat", ECHO[1], NOT_RUN),
    ]
    assert "ben/echo.html#case-echo.tcp.half-close" in parsed.links
    assert all(not link.startswith(("http:", "https:", "/")) for link in parsed.links)
    assert parsed.rates == {"chat.join": "n/a", ECHO[0]: "100%", ECHO[1]: "50%"}
    assert parsed.loads == [] and parsed.scripts == 0
    assert 'class="rate low"' not in page and page.count('class="rate"') == 3


def test_progress_is_a_line_per_event_off_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, 2, live=False)
    row = _row("ann", "echo")
    progress.started(row)
    progress.finished(RunRecord(row, 1, 2.5, {"score": {"points": 1, "max_points": 2}}, ""))
    progress.close()
    assert out.getvalue().splitlines() == ["[0/2] started ann echo", "[1/2] done ann echo: 1/2 points in 2.5 s"]


def test_progress_on_a_terminal_rewrites_one_status_line() -> None:
    out = io.StringIO()
    progress = Progress(out, 1, live=True)
    row = _row("ann", "echo")
    progress.started(row)
    assert out.getvalue() == "\r\x1b[Kgraded 0/1; running: ann/echo"
    progress.finished(RunRecord(row, 2, 1.0, None, "exit status 2: no server"))
    progress.close()
    assert out.getvalue().split("\r\x1b[K")[2:] == [
        "[1/1] done ann echo: could not complete: exit status 2: no server in 1.0 s\ngraded 1/1; running: -",
        "",
    ]


def test_runs_that_share_loopback_broadcast_never_overlap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With slots to spare, chat and broadcast runs still go one at a time; the others run beside them."""
    import io as _io

    import trio
    import trio.testing

    from conformance.roster import grade

    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    peak = 0

    async def fake_run(row: Row, out: Path, words: Any, timeout: float, progress: Progress) -> RunRecord:
        nonlocal peak
        running.append(row.protocol)
        peak = max(peak, len(running))
        sharing = [name for name in running if PROTOCOLS[name].shares_broadcast]
        if len(sharing) > 1:
            overlaps.append(tuple(sharing))
        await trio.sleep(1)
        running.remove(row.protocol)
        return RunRecord(row, 0, 1.0, None, "")

    monkeypatch.setattr(grade, "_run_row", fake_run)
    rows = parse(
        "student,protocol,address\n"
        + "".join(f"{s},{p},127.0.0.1:9\n" for s in ("a", "b", "c") for p in ("chat", "broadcast", "echo"))
    )
    progress = Progress(_io.StringIO(), len(rows), live=False)
    records = trio.run(
        lambda: grade.grade_rows(rows, tmp_path, [], jobs=9, timeout=10, progress=progress),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    assert [record.row for record in records] == rows
    assert overlaps == [] and peak >= 4  # three echo runs beside one chat or broadcast run
    assert {p for p in PROTOCOLS if PROTOCOLS[p].shares_broadcast} == {"chat", "broadcast"}
