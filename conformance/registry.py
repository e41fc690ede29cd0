"""The protocols the suite knows, in the order their cases run. One case module per protocol family."""

from __future__ import annotations

import importlib
from functools import cache

from conformance.model import Case, Option, Protocol

CASE_MODULES: tuple[str, ...] = (
    "conformance.cases.echo",
    "conformance.cases.tftp",
    "conformance.cases.messenger",
    "conformance.cases.upload",
)


@cache
def protocols() -> dict[str, Protocol]:
    found: dict[str, Protocol] = {}
    for name in CASE_MODULES:
        module = importlib.import_module(name)
        for protocol in module.PROTOCOLS:
            if protocol.name in found:
                raise ValueError(f"protocol {protocol.name} is registered twice")
            found[protocol.name] = protocol
    return found


def all_cases() -> list[Case]:
    return [case for protocol in protocols().values() for case in protocol.cases]


def all_options() -> list[Option]:
    seen: dict[str, Option] = {}
    for protocol in protocols().values():
        for option in protocol.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())
