"""Test tiers by directory: ``unit/`` (sans-IO, seconds), ``integration/``, ``conformance/`` (slow), ``peers/``.

The tier's marker is added here, so ``-m "not slow"`` and ``-m "not peers"`` select by tier too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_TESTS = Path(__file__).resolve().parent
_TIER_MARKS = {"conformance": "slow", "peers": "peers"}

# Under GitHub Actions every `conformance run` a test starts would append to the job's summary page;
# the tests that check that append name their own file.
os.environ.pop("GITHUB_STEP_SUMMARY", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.resolve().relative_to(_TESTS).parts[0]
        except ValueError:
            continue  # pytester's own temporary test files
        mark = _TIER_MARKS.get(tier)
        if mark is not None:
            item.add_marker(mark)
