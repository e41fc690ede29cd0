"""The protocols the suite knows: every package under :mod:`conformance.protocols` that exports ``PROTOCOLS``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import conformance.protocols
from conformance.model import Option, Protocol


def protocol_packages() -> list[str]:
    """The dotted names of the protocol packages, in the order their cases run (by name)."""
    return sorted(
        f"{conformance.protocols.__name__}.{info.name}"
        for info in pkgutil.iter_modules(conformance.protocols.__path__)
        if info.ispkg and not info.name.startswith("_")
    )


@cache
def protocols() -> dict[str, Protocol]:
    found: dict[str, Protocol] = {}
    for name in protocol_packages():
        module = importlib.import_module(name)
        for protocol in module.PROTOCOLS:
            if protocol.name in found:
                raise ValueError(f"protocol {protocol.name} is registered twice")
            found[protocol.name] = protocol
    return found


def all_options() -> list[Option]:
    seen: dict[str, Option] = {}
    for protocol in protocols().values():
        for option in protocol.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())
