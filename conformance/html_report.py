"""A self-contained HTML report of a run (``conformance run --html PATH``), for a person with a browser.

Theory of operation
-------------------
:class:`HtmlReport` is handed each case as it finishes (before the command drops the transcripts of
passed cases that the JSON report does not carry) and keeps what the page shows: the result, and
its transcript's steps without their payload excerpts, each with a short digest of the bytes for
the ladder diagram to tell repeats apart (:mod:`conformance.ladder`). The transcript's ring bounds
the steps of each case, and dropping the excerpts keeps a run of every case to a few hundred bytes
a step.

:func:`render_html` fills the Jinja2 template ``templates/report.html.j2`` (autoescaped: a case's
output or a target's answer can hold anything, ``</script>`` included); the page carries its CSS,
script and SVG inline and loads nothing, so it opens from a CI artifact with no network.

``python -m conformance.html_report --screenshot OUT.png REPORT.html`` takes a picture of a report
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, with selenium), for people
writing docs or issues; the tests drive the same browser through :func:`chromium`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.ladder import Ladder, Step, build_ladder, has_datagrams
from conformance.report import OUTCOME_ORDER, SUMMARY_WORDS, write_atomically
from conformance.runner import CaseResult
from conformance.transcript import DEADLINE, Transcript
from conformance.vocabulary import Outcome

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "report.html.j2"
# Bytes of a digest: enough to tell two payloads of one case apart.
DIGEST_BYTES = 8
# The labels CaseFailed.__str__ puts before the values it renders under its summary line.
_VALUE_LABELS = ("sent", "expected", "actual")
_SHRUNK = "  shrunk input: "
_REPLAY = "  replay: "
# Outcomes whose details are open when the page loads.
OPEN_OUTCOMES = (Outcome.FAILED, Outcome.ERROR)


@dataclass(frozen=True, slots=True)
class FailureParts:
    """A case's message split as the page shows it: the headline, then each part under its heading."""

    headline: str
    values: list[tuple[str, str]] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    shrunk: str | None = None
    replay: str | None = None


def failure_parts(message: str) -> FailureParts:
    """The parts of a message rendered by ``CaseFailed.__str__``; any other message is a headline and details."""
    lines = message.splitlines()
    if not lines:
        return FailureParts("")
    values: list[tuple[str, str]] = []
    details: list[str] = []
    shrunk = replay = None
    for line in lines[1:]:
        label = next((name for name in _VALUE_LABELS if line.startswith(f"  {name + ':':<9} ")), None)
        if label is not None:
            values.append((label, line[12:]))
        elif line.startswith(_SHRUNK):
            shrunk = line[len(_SHRUNK) :]
        elif line.startswith(_REPLAY):
            replay = line[len(_REPLAY) :]
        else:
            details.append(line[2:] if line.startswith("  ") else line)
    return FailureParts(lines[0], values, details, shrunk, replay)


def slim_steps(transcript: Transcript) -> list[Step]:
    """The transcript's entries without their excerpts: what the page shows, and a digest to compare."""
    return [
        Step(
            dataclasses.replace(entry, excerpt=b""),
            hashlib.blake2b(entry.excerpt, digest_size=DIGEST_BYTES).digest() if entry.is_data else b"",
        )
        for entry in transcript
    ]


@dataclass
class _Kept:
    result: CaseResult
    steps: list[Step] | None
    dropped: int


@dataclass(frozen=True)
class CaseView:
    """What the template needs of one case."""

    result: CaseResult
    parts: FailureParts
    fatal: bool
    open: bool
    steps: list[Step] | None
    dropped: int
    ladder: Ladder | None

    @property
    def step_classes(self) -> list[str]:
        failing = self.ladder.failing_step if self.ladder is not None else None
        classes = []
        for index, step in enumerate(self.steps or []):
            names = [step.entry.event.replace(" ", "-")]
            if step.entry.event == DEADLINE:
                names.append("deadline")
            if index == failing:
                names.append("failing")
            classes.append(" ".join(names))
        return classes


class HtmlReport:
    """Collects the finished cases of a run, then writes the page."""

    def __init__(self) -> None:
        self._cases: list[_Kept] = []

    def add(self, result: CaseResult) -> None:
        transcript = result.transcript
        steps = slim_steps(transcript) if transcript is not None else None
        kept = dataclasses.replace(result, transcript=None)
        self._cases.append(_Kept(kept, steps, transcript.dropped if transcript is not None else 0))

    def write(
        self, path: Path, summary: Mapping[str, Any], targets: Mapping[str, str], provenance: Mapping[str, Any]
    ) -> None:
        page = render_html(self.views(summary["strict"]), summary, targets, provenance)
        write_atomically(path, page.encode("utf-8"))

    def views(self, strict: bool) -> list[CaseView]:
        return [case_view(kept.result, kept.steps, kept.dropped, strict=strict) for kept in self._cases]


def case_view(result: CaseResult, steps: list[Step] | None, dropped: int = 0, *, strict: bool = False) -> CaseView:
    troubled = result.outcome in OPEN_OUTCOMES
    ladder = None
    if steps and has_datagrams(steps):
        ladder = build_ladder(steps, failed=troubled)
    return CaseView(
        result=result,
        parts=failure_parts(result.message),
        fatal=result.is_fatal(strict),
        open=troubled,
        steps=steps,
        dropped=dropped,
        ladder=ladder,
    )


def environment() -> jinja2.Environment:
    import jinja2  # only for runs that write the page

    return jinja2.Environment(
        loader=jinja2.PackageLoader("conformance", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(
    cases: Sequence[CaseView],
    summary: Mapping[str, Any],
    targets: Mapping[str, str],
    provenance: Mapping[str, Any],
) -> str:
    """The whole page: run facts and totals at the top, then one row and one details block per case."""
    protocols = list(dict.fromkeys(case.result.protocol for case in cases))
    totals = [(outcome.value, SUMMARY_WORDS[outcome], summary.get(outcome.value, 0)) for outcome in OUTCOME_ORDER]
    template = environment().get_template(TEMPLATE)
    return template.render(
        cases=cases, summary=summary, targets=targets, run=provenance, protocols=protocols, totals=totals
    )


# -- looking at a report in a browser (tests and people; never needed to write one) --------------------


def chromium(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium driven by selenium, from Debian's ``chromium`` and ``chromium-driver``
    (the variables ``CHROMIUM`` and ``CHROMEDRIVER`` name others).

    Raises :class:`FileNotFoundError` when either is missing; selenium is then never asked to fetch
    a browser of its own.
    """
    browser = shutil.which(os.environ.get("CHROMIUM") or "chromium") or shutil.which("chromium-browser")
    driver = shutil.which(os.environ.get("CHROMEDRIVER") or "chromedriver")
    if browser is None or driver is None:
        raise FileNotFoundError(
            "headless Chromium needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    # No sandbox: CI runs as root; no background requests: the tests check that the page makes none.
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def screenshot(report: Path, out: Path, *, width: int = 1400, max_height: int = 6000) -> None:
    """A PNG of the whole report (up to ``max_height`` pixels tall) as it opens."""
    driver = chromium(width)
    try:
        driver.get(report.resolve().as_uri())
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(max(height, 600), max_height))
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.html_report", description="Take a screenshot of an HTML report."
    )
    parser.add_argument("--screenshot", type=Path, required=True, metavar="OUT.png")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels (default: 1400)")
    parser.add_argument("report", type=Path, metavar="REPORT.html")
    args = parser.parse_args(argv)
    try:
        screenshot(args.report, args.screenshot, width=args.width)
    except FileNotFoundError as exc:
        print(f"screenshot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
