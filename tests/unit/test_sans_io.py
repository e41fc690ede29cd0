"""The sans-IO modules load no I/O machinery: no trio, socket, threading, subprocess, ssl or asyncio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("trio", "socket", "_socket", "threading", "_thread", "subprocess", "ssl", "asyncio", "selectors")
# Sans-IO modules beside the role-named ones: codecs and state a protocol splits further.
ALSO_SANS_IO = (
    "harness._kit.addresses",
    "harness._kit.deadlines",
    "harness._kit.errors",
    "harness._kit.framing",
    "harness._kit.kinds",
    "harness.tftp.blocks",
    "harness.tftp.errors",
    "harness.tftp.netascii",
    "harness.tftp.options",
    "harness.upload.names",
    "harness.relay.rules",
    "conformance.ladder",
)

# -S: without site, the interpreter has loaded none of them before the first import (a .pth file's
# import of zipfile brings in threading otherwise).
_PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    found[name] = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in FORBIDDEN)
print(json.dumps(found))
"""


def sans_io_modules() -> list[str]:
    role_named = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for path in (REPO / "harness").glob("*/*.py")
        if path.stem in ("wire", "machine")
    )
    return role_named + list(ALSO_SANS_IO)


def test_every_protocol_package_has_a_wire_module() -> None:
    packages = {path.parent.name for path in (REPO / "harness").glob("*/__init__.py")}
    with_wire = {path.parent.name for path in (REPO / "harness").glob("*/wire.py")}
    assert packages - with_wire <= {"_kit", "relay", "chat", "broadcast"}


def test_sans_io_modules_load_no_io_machinery() -> None:
    modules = sans_io_modules()
    assert "harness.tftp.machine" in modules and "harness.upload.wire" in modules
    code = f"FORBIDDEN = {FORBIDDEN!r}\n{_PROBE}"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, *modules], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = {name: extra for name, extra in json.loads(result.stdout).items() if extra}
    assert loaded == {}, f"sans-IO modules that load I/O machinery: {loaded}"
