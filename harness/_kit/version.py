"""The version of the code that is running, for ``--version`` and for the reports it writes.

The installed distribution's metadata is the answer when this very copy of the code is the one it
installed. Run from a checkout (``PYTHONPATH=.``, ``pip install -e .``), the metadata may describe
another copy, or be missing, so the checkout's own ``pyproject.toml`` is read instead and the
version says so.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

DISTRIBUTION = "socket-conformance"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _installed_here() -> str | None:
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    installed = Path(str(distribution.locate_file(f"{_PACKAGE_DIR.name}/__init__.py")))
    if installed.resolve() != (_PACKAGE_DIR / "__init__.py"):
        return None
    return distribution.version


def _checkout_version() -> str | None:
    try:
        with (_PACKAGE_DIR.parent / "pyproject.toml").open("rb") as handle:
            project = tomllib.load(handle).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DISTRIBUTION or not isinstance(project.get("version"), str):
        return None
    return str(project["version"])


def suite_version() -> str:
    """``0.1.0`` when installed, ``0.1.0 (checkout)`` from a source tree, ``unknown`` when neither tells."""
    installed = _installed_here()
    if installed is not None:
        return installed
    checkout = _checkout_version()
    if checkout is not None:
        return f"{checkout} (checkout)"
    return "unknown"
