"""The HTML report's rendering: everything escaped, the message split, the ladder of a TFTP exchange."""

from __future__ import annotations

import itertools
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conformance.html_report import FailureParts, HtmlReport, case_view, failure_parts, render_html, slim_steps
from conformance.ladder import DUPLICATE, MAX_DATAGRAMS, NO_ANSWER, RETRANSMISSION, build_ladder, mark_repeats
from conformance.protocols.tftp.describe import VIEWS
from conformance.runner import CaseResult
from conformance.transcript import DEADLINE, RECEIVED, SENT, Transcript
from conformance.vocabulary import CaseFailed, Level, Outcome
from harness.tftp.wire import ReadRequest, encode_ack, encode_data, encode_error

REPO = Path(__file__).resolve().parents[2]
SUITE = ("127.0.0.1", 50000)
LISTENER = ("127.0.0.1", 69)
TRANSFER = ("127.0.0.1", 40000)
HOSTILE = '<script>alert("x")</script></details></pre></td></tr></table><img src="https://example.invalid/x">'
PROVENANCE = {
    "suite": "socket-conformance",
    "version": "0.1.0",
    "python": "3.11",
    "platform": "Linux",
    "command": f"conformance run -k '{HOSTILE}'",
    "started": "2026-01-01T00:00:00+00:00",
    "duration_s": 1.0,
}


class Elements(HTMLParser):
    """Counts start and end tags and collects the URLs in src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts[tag] = self.starts.get(tag, 0) + 1
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]

    def handle_endtag(self, tag: str) -> None:
        self.ends[tag] = self.ends.get(tag, 0) + 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    elements.close()
    return elements


def result(case_id: str, outcome: Outcome, message: str = "", **fields: Any) -> CaseResult:
    protocol = fields.pop("protocol", case_id.split(".")[0])
    return CaseResult(case_id, protocol, outcome, 0.5, message, "RFC 1350 §2", Level.MUST, **fields)


def summary(results: list[CaseResult]) -> dict[str, Any]:
    counts = {outcome.value: sum(1 for r in results if r.outcome is outcome) for outcome in Outcome}
    ok = not counts["failed"] and not counts["error"]
    return {
        "total": len(results),
        **counts,
        "expected_failures": 0,
        "unexpected_passes": 0,
        "should_failures_not_fatal": 0,
        "strict": False,
        "duration_s": 1.0,
        "ok": ok,
    }


def page_of(results: list[CaseResult], targets: dict[str, str] | None = None) -> str:
    report = HtmlReport()
    for each in results:
        report.add(each)
    return render_html(report.views(False), summary(results), targets or {"tftp": "127.0.0.1:69"}, PROVENANCE)


def tftp_transcript() -> Transcript:
    """RRQ; DATA 1, ACK 1; DATA 2 twice with no ACK between (a retransmission); ACK 2; DATA 2 once more,
    though answered (a duplicate); DATA 3, ACK 3 sent twice unanswered, then the deadline."""
    clock = itertools.count(0.0, 0.25)
    transcript = Transcript(VIEWS, clock=lambda: next(clock))

    def sent(data: bytes, to: tuple[str, int] = TRANSFER) -> None:
        transcript.datagram(SENT, data, local=SUITE, remote=to)

    def received(data: bytes) -> None:
        transcript.datagram(RECEIVED, data, local=SUITE, remote=TRANSFER)

    block = bytes(512)
    sent(ReadRequest("size-1200.bin", "octet").encode(), LISTENER)  # 0
    received(encode_data(1, block))  # 1
    sent(encode_ack(1))  # 2
    received(encode_data(2, block))  # 3
    received(encode_data(2, block))  # 4: retransmission
    sent(encode_ack(2))  # 5
    received(encode_data(2, block))  # 6: duplicate
    received(encode_data(3, bytes(176)))  # 7
    sent(encode_ack(3))  # 8
    sent(encode_ack(3))  # 9: retransmission, unanswered
    transcript.mark(DEADLINE, "5.0 s waiting for the transfer to end")  # 10
    sent(encode_error(0, "conformance case over"))  # 11: cleanup after the failure
    return transcript


def test_repeats_are_told_apart_by_whether_an_answer_came_in_between() -> None:
    steps = slim_steps(tftp_transcript())
    tags = mark_repeats(steps)
    assert tags == {
        4: [RETRANSMISSION],
        6: [DUPLICATE],
        8: [NO_ANSWER],
        9: [RETRANSMISSION, NO_ANSWER],
    }


def test_the_ladder_of_a_failed_tftp_exchange() -> None:
    steps = slim_steps(tftp_transcript())
    ladder = build_ladder(steps, failed=True)
    assert [(lane.role, lane.address) for lane in ladder.lanes] == [
        ("suite", "127.0.0.1:50000"),
        ("target", "127.0.0.1:69"),
        ("target", "127.0.0.1:40000"),
    ]
    suite, listener, transfer = (lane.x for lane in ladder.lanes)
    rows = ladder.rows
    assert len(rows) == 12 and ladder.omitted == 0
    assert (rows[0].x1, rows[0].x2, rows[0].label) == (suite, listener, 'RRQ "size-1200.bin" octet')
    assert (rows[1].x1, rows[1].x2, rows[1].label) == (transfer, suite, "DATA 1 (512 bytes)")
    assert rows[4].label == "DATA 2 (512 bytes) [retransmission]" and "retransmission" in rows[4].classes
    assert "duplicate" in rows[6].classes
    assert rows[10].kind == "marker" and rows[10].x2 == ladder.width
    # The failing step: the expired deadline, not the ERROR the suite sends afterwards to clean up.
    assert ladder.failing_step == 10 and [row.step for row in rows if row.failing] == [10]
    assert all(rows[i].y < rows[i + 1].y for i in range(len(rows) - 1))
    # A passed case highlights nothing.
    assert build_ladder(steps, failed=False).failing_step is None


def test_without_a_deadline_the_failing_step_is_the_last_datagram_received() -> None:
    clock = itertools.count(0.0, 0.25)
    transcript = Transcript(VIEWS, clock=lambda: next(clock))
    transcript.datagram(SENT, ReadRequest("a", "octet").encode(), local=SUITE, remote=LISTENER)
    transcript.datagram(RECEIVED, encode_data(2, b"x"), local=SUITE, remote=TRANSFER)
    transcript.datagram(SENT, encode_error(0, "conformance case over"), local=SUITE, remote=TRANSFER)
    assert build_ladder(slim_steps(transcript), failed=True).failing_step == 1


def test_the_ladder_draws_the_last_datagrams_only() -> None:
    transcript = Transcript(VIEWS)
    for block in range(1, 201):
        transcript.datagram(RECEIVED, encode_data(block, bytes(512)), local=SUITE, remote=TRANSFER)
        transcript.datagram(SENT, encode_ack(block), local=SUITE, remote=TRANSFER)
    ladder = build_ladder(slim_steps(transcript), failed=False)
    assert len(ladder.rows) == MAX_DATAGRAMS and ladder.omitted == 400 - MAX_DATAGRAMS
    assert ladder.rows[-1].label == "ACK 200"
    page = page_of([result("tftp.rrq.big", Outcome.PASSED, transcript=transcript)])
    assert f"The first {400 - MAX_DATAGRAMS} datagrams are not drawn" in page


def test_the_page_holds_the_ladder_with_its_marks_and_the_transcript() -> None:
    page = page_of([result("tftp.rrq.lost-ack", Outcome.FAILED, "timed out", transcript=tftp_transcript())])
    elements = parsed(page)
    assert elements.starts["svg"] == 1
    for mark in ("datagram received retransmission", "datagram received duplicate", "no-answer", 'class="highlight"'):
        assert mark in page, mark
    assert "marker deadline-expired failing" in page
    # The transcript lists every step, the failing one marked too.
    assert page.count('<tr class="') >= 12
    assert '<tr class="deadline-expired deadline failing" data-step="10">' in page


def test_tcp_cases_have_no_ladder() -> None:
    transcript = Transcript()
    transcript.data(SENT, b"hello", "hello", transport="tcp", local=SUITE, remote=LISTENER, stream=1)
    view = case_view(result("echo.tcp.round-trip", Outcome.FAILED, "x", transcript=transcript), slim_steps(transcript))
    assert view.ladder is None and view.steps


def test_hostile_text_anywhere_is_escaped() -> None:
    failure = CaseFailed(HOSTILE, sent=HOSTILE.encode(), expected=b"</details>", actual="</script><script>")
    failure.example = repr(HOSTILE)
    failure.replay = f"conformance run -k x --replay {HOSTILE!r}"
    transcript = Transcript(VIEWS)
    transcript.datagram(RECEIVED, HOSTILE.encode(), local=SUITE, remote=TRANSFER)
    transcript.mark(DEADLINE, HOSTILE)
    results = [
        result(
            "tftp.rrq.hostile",
            Outcome.FAILED,
            str(failure),
            description=HOSTILE,
            notes=[HOSTILE],
            output=[HOSTILE, "</pre>"],
            transcript=transcript,
        ),
        result("tftp.rrq.error", Outcome.ERROR, f"the harness itself broke: {HOSTILE}"),
        result("echo.tcp.passed", Outcome.PASSED, description=HOSTILE, protocol='echo"><script>'),
    ]
    page = page_of(results, targets={"tftp": HOSTILE})
    elements = parsed(page)
    # Only the page's own script, details and image-free markup: nothing from a case became an element.
    assert elements.starts.get("script") == 1 and elements.ends.get("script") == 1
    assert elements.starts.get("details") == 3 and elements.ends.get("details") == 3
    assert "img" not in elements.starts and elements.urls == []
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    # Escaped is still readable: the text a person sees holds the hostile string as it was.
    assert HOSTILE in "".join(elements.text)


def test_the_message_is_split_into_its_parts() -> None:
    failure = CaseFailed("DATA 1 differs", sent=b"\x00\x01a\x00", expected=b"abc", actual=b"abd", details="why\nso")
    failure.example = "(b'a', 3)"
    failure.replay = "conformance run --target tftp=h:1 -k tftp.x --replay \"(b'a', 3)\""
    parts = failure_parts(str(failure))
    assert parts.headline == "DATA 1 differs"
    assert parts.values == [("sent", "b'\\x00\\x01a\\x00'"), ("expected", "b'abc'"), ("actual", "b'abd'")]
    assert parts.details == ["why", "so"]
    assert parts.shrunk == "(b'a', 3)" and parts.replay == failure.replay
    plain = failure_parts("the target closed the connection\n  after 3 bytes")
    assert plain.headline == "the target closed the connection" and plain.details == ["after 3 bytes"]
    assert failure_parts("") == FailureParts("")


def test_the_collector_keeps_steps_without_payloads_and_the_page_opens_failures() -> None:
    report = HtmlReport()
    report.add(result("tftp.rrq.lost-ack", Outcome.FAILED, "x", transcript=tftp_transcript()))
    report.add(result("tftp.rrq.small", Outcome.PASSED, transcript=None))
    failed, passed = report.views(False)
    assert failed.steps is not None and all(step.entry.excerpt == b"" for step in failed.steps)
    assert failed.result.transcript is None
    assert failed.open and not passed.open and passed.steps is None
    page = render_html(report.views(False), summary([failed.result, passed.result]), {}, PROVENANCE)
    assert page.count("<details open>") == 1
    assert "No transcript: this run recorded none" in page


def test_the_template_is_package_data() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["conformance"]
    templates = sorted(path.relative_to(REPO / "conformance") for path in (REPO / "conformance").rglob("*.j2"))
    assert templates and all(any(path.match(pattern) for pattern in patterns) for path in templates)


def test_the_score_is_at_the_top_when_the_run_has_one() -> None:
    results = [result("tftp.rrq.small", Outcome.PASSED), result("tftp.rrq.large", Outcome.FAILED, "short")]
    scored = {**summary(results), "score": {"points": 1, "max_points": 2, "percent": 50.0, "rubric": "default"}}
    report = HtmlReport()
    for each in results:
        report.add(each)
    page = render_html(report.views(False), scored, {"tftp": "127.0.0.1:69"}, PROVENANCE)
    assert "Score: <strong>1/2 points</strong>" in page and "(50%, rubric: default)" in page
    assert 'id="score"' not in page_of(results)
