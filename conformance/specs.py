"""Spec references: the one way a case says which part of which specification it checks.

A case cites one reference or a tuple of them, ``ref("RFC 1350", "2", "5")`` or
``(ref("RFC 862", "1"), ref("RFC 9293", "3.8", note="flow control"))``; ``conformance list`` and the
reports show them as ``RFC 862 §1; RFC 9293 §3.8 (flow control)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpecRef:
    """Sections (``§``) or a named topic of one document, with an optional note in parentheses."""

    document: str
    sections: tuple[str, ...] = ()
    topic: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.document:
            raise ValueError("a spec reference names its document")
        if self.sections and self.topic is not None:
            raise ValueError(f"{self.document}: cite numbered sections or a topic, not both")

    def __str__(self) -> str:
        text = self.document
        if self.sections:
            text += " " + ", ".join(f"§{section}" for section in self.sections)
        if self.topic is not None:
            text += f": {self.topic}"
        if self.note is not None:
            text += f" ({self.note})"
        return text


# What a case cites: one reference, or several in the order they apply.
Citation = SpecRef | tuple[SpecRef, ...]


def ref(document: str, *sections: str, topic: str | None = None, note: str | None = None) -> SpecRef:
    return SpecRef(document, sections, topic, note)


def render(citation: Citation) -> str:
    """The one-line form shown by ``conformance list`` and stored in reports."""
    refs = (citation,) if isinstance(citation, SpecRef) else citation
    if not refs:
        raise ValueError("a case cites at least one spec reference")
    return "; ".join(str(one) for one in refs)
