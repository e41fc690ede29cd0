"""Spec references: one way to write them, rendered as the one line reports and ``conformance list`` show."""

from __future__ import annotations

import pytest

from conformance.specs import SpecRef, ref, render


def test_a_citation_renders_as_one_line() -> None:
    assert render(ref("RFC 862", "1")) == "RFC 862 §1"
    cited = (
        ref("RFC 1350", "2", "5"),
        ref("RFC 9293", "3.8", note="flow control"),
        ref("docs/chat.md", topic="joining"),
    )
    assert render(cited) == "RFC 1350 §2, §5; RFC 9293 §3.8 (flow control); docs/chat.md: joining"


def test_a_reference_cites_sections_or_a_topic_and_a_citation_is_not_empty() -> None:
    with pytest.raises(ValueError):
        SpecRef("RFC 862", ("1",), topic="both")
    with pytest.raises(ValueError):
        render(())
