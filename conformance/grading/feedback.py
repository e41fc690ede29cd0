"""What a student reads about one case, and fitting a platform's file within its size limit.

A failed case's text is what the terminal shows under it: the message (with the replay command of a
search case), the program's output during the case, and the last steps of the wire transcript.
Each platform caps the size of its file; a text is then cut in its middle, keeping the message at
the top and the newest transcript steps at the bottom, with a note saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from conformance.grading.score import CaseScore, Score
from conformance.runner import CaseResult
from conformance.vocabulary import Outcome

# Per case, tried from the first down until the file fits: a failure's full text first, then shorter.
TEXT_BUDGETS = (16384, 8192, 4096, 2048, 1024, 512, 256, 0)
CUT_NOTE = "\n[... {cut} characters cut to fit {platform}'s size limit; the JSON report has them ...]\n"
# Why a target could not be tested: a line, or a program's last output; more is not read.
REASON_CHARS = 16384
# A case that is not held against the student needs a line or two, whatever the budget.
PASSED_CHARS = 512
# Hidden cases: students learn the points, not what the case sent or expected.
HIDDEN_TEXT = "a hidden case: its details are for the teacher"


def case_text(result: CaseResult) -> str:
    """The full text of ``result`` for a student: verdict and description, then what went wrong."""
    lines = [f"{result.verdict}: {result.description}".rstrip(": "), f"spec: {result.spec} ({result.level.value})"]
    if result.outcome is not Outcome.PASSED or result.unexpected_pass:
        lines.extend(result.message.splitlines())
    if result.expected_failure:
        lines.append(f"expected to fail: {result.expected_failure}")
    if result.outcome in (Outcome.FAILED, Outcome.ERROR):
        if result.output:
            lines.append("target output during the case:")
            lines.extend(f"| {line}" for line in result.output)
        if result.transcript is not None:
            lines.extend(result.transcript.lines())
    return "\n".join(lines)


def test_text(result: CaseResult, case: CaseScore, budget: int, platform: str) -> str:
    """The text of a case's test on ``platform``: its full text and the rubric's note, cut to ``budget``."""
    text = case_text(result) + (f"\n{case.note}" if case.note else "")
    return clip(text, min(budget, PASSED_CHARS) if case.passed else budget, platform)


def unusable_text(reason: str, platform: str) -> str:
    return clip(f"The server could not be tested, so no case ran: {reason}", REASON_CHARS, platform)


def shown_cases(results: Iterable[CaseResult], score: Score) -> Iterator[tuple[CaseResult, CaseScore]]:
    """Each result that is not hidden, with its score: what a platform without hidden tests lists one by one."""
    by_id = score.by_id()
    for result in results:
        case = by_id[result.id]
        if not case.hidden:
            yield result, case


def first_line(result: CaseResult) -> str:
    return result.message.splitlines()[0] if result.message.strip() else result.verdict


def clip(text: str, budget: int, platform: str) -> str:
    """``text`` in at most about ``budget`` characters: its head and tail, the middle replaced by a note."""
    if len(text) <= budget:
        return text
    if budget <= 0:
        return text.splitlines()[0] if text else ""
    head = budget * 2 // 3
    tail = budget - head
    cut = len(text) - head - tail
    return text[:head] + CUT_NOTE.format(cut=cut, platform=platform) + (text[-tail:] if tail else "")


def encoded(document: Any, *, compact: bool = False) -> bytes:
    if compact:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()


def fit(
    render: Callable[[int], Any], limit: int, budgets: Iterable[int] = TEXT_BUDGETS, *, compact: bool = False
) -> bytes:
    """The JSON of ``render(budget)`` for the largest per-case text budget that keeps it within ``limit`` bytes.

    The last budget's rendering is returned even when over: the caller's document without texts is
    what the suite can say, and a platform that refuses it still shows why in its own log.
    """
    data = b""
    for budget in budgets:
        data = encoded(render(budget), compact=compact)
        if len(data) <= limit:
            return data
    return data
