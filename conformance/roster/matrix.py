"""The class matrix, ``DIR/index.html``: students by cases, each cell coloured by its outcome and
linking to the case in that student's HTML report, under a row of each case's pass rate.

Filled from the Jinja2 template ``templates/class.html.j2``, autoescaped (a failure message in a
cell's title can hold anything), with its CSS inline and no script or URL loaded: it opens from a
CI artifact or a zip with no network, like the run's own report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conformance.grading.score import shown
from conformance.html_report import environment
from conformance.report import write_atomically
from conformance.roster.gradebook import NOT_RUN, Gradebook

TEMPLATE = "class.html.j2"
# What a cell shows of its outcome: a mark that tells the outcomes apart without the colours.
MARKS = {"passed": "✓", "failed": "✗", "error": "!", "unsupported": "\u2013", "skipped": "·", NOT_RUN: "∅"}
# Below this pass rate a case's column is flagged: most of the class missed that requirement.
LOW_PASS_RATE = 50.0


def render_matrix(book: Gradebook, facts: Mapping[str, Any]) -> str:
    groups: list[tuple[str, int]] = []
    for case_id in book.case_ids:
        protocol = book.protocols[case_id]
        if groups and groups[-1][0] == protocol:
            groups[-1] = (protocol, groups[-1][1] + 1)
        else:
            groups.append((protocol, 1))
    rates = {case_id: book.pass_rate(case_id) for case_id in book.case_ids}
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            book=book,
            groups=groups,
            rates=rates,
            facts=facts,
            marks=MARKS,
            low=LOW_PASS_RATE,
            shown=shown,
            css_class=lambda outcome: "outcome-" + outcome.replace(" ", "-"),
        )
    )


def write_matrix(path: Path, book: Gradebook, facts: Mapping[str, Any]) -> None:
    write_atomically(path, render_matrix(book, facts).encode("utf-8"))
