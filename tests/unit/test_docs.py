"""Each protocol's page in docs/ (its ``doc``) names every case id, so the docs cannot drift from the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import registry

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("protocol", sorted(registry.protocols()))
def test_every_case_id_is_documented(protocol: str) -> None:
    page = DOCS / registry.protocols()[protocol].doc
    text = page.read_text()
    cases = registry.protocols()[protocol].cases
    wildcard = f"`{cases[0].id.rsplit('.', 1)[0]}.*`"
    missing = [c.id for c in cases if f"`{c.id}`" not in text and wildcard not in text]
    assert not missing, f"{page.name} does not mention {missing}"
