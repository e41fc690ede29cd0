"""The classifiers the UDP relay can use: each protocol's ``wire.classify``, found by package, and ``raw``."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Mapping

import harness
from harness._kit.kinds import ANY, OTHER, Classifier

__all__ = ["ANY", "CLASSIFIERS", "OTHER", "Classifier", "classify_raw"]


def classify_raw(payload: bytes) -> str:
    """Do not look inside: every datagram is :data:`OTHER`, selectable only as ``any``."""
    return OTHER


def _protocol_classifiers() -> dict[str, tuple[Classifier, tuple[str, ...]]]:
    found: dict[str, tuple[Classifier, tuple[str, ...]]] = {}
    for info in sorted(pkgutil.iter_modules(harness.__path__), key=lambda info: info.name):
        name = f"{harness.__name__}.{info.name}.wire"
        if not info.ispkg or info.name.startswith("_") or importlib.util.find_spec(name) is None:
            continue
        wire = importlib.import_module(name)
        if hasattr(wire, "classify"):
            found[info.name] = (wire.classify, tuple(wire.KINDS))
    return found


#: Classifier name -> (function, kinds it can produce besides OTHER).
CLASSIFIERS: Mapping[str, tuple[Classifier, tuple[str, ...]]] = {**_protocol_classifiers(), "raw": (classify_raw, ())}
