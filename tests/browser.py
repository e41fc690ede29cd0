"""Headless Chromium for the HTML report's tests (Debian packages ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from conformance.html_report import chromium
from tests.peers import REQUIRE_VARIABLE


def browser() -> Any:
    """A selenium driver of headless Chromium; skips without one (fails under CONFORMANCE_REQUIRE_PEERS=1)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing = "selenium is not installed (pip install '.[test]')"
    else:
        try:
            return chromium()
        except FileNotFoundError as exc:
            missing = str(exc)
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{missing} (and {REQUIRE_VARIABLE}=1 forbids skipping)", pytrace=False)
    pytest.skip(missing)
