"""Targets as the command line gives them: --target/--target-cmd, placeholders, free ports.

Parsing only: :mod:`conformance.hosting` starts what these describe.
"""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from conformance.serving import Serving
from conformance.vocabulary import UsageError

TargetKind = Literal["embedded", "address", "command"]


@dataclass(frozen=True)
class TargetSpec:
    protocol: str
    kind: TargetKind
    host: str | None = None
    port: int | None = None
    command: str | None = None

    def cli_form(self) -> str:
        """How this target is written on the ``conformance run`` command line (for replay lines)."""
        if self.kind == "address":
            return f"--target {self.protocol}={self.host}:{self.port}"
        if self.kind == "command":
            return f"--target-cmd {shlex.quote(f'{self.protocol}={self.command}')}"
        return f"--target {self.protocol}=embedded"


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UsageError(f"{flag} {text!r} should look like PROTOCOL=VALUE, e.g. {flag} echo=127.0.0.1:7")
    return name.strip(), value.strip()


def parse_target(text: str) -> TargetSpec:
    protocol, value = _split_assignment(text, "--target")
    if value == "embedded":
        return TargetSpec(protocol, "embedded")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--target {text!r}: expected HOST:PORT after '=', e.g. {protocol}=127.0.0.1:7")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--target {text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"--target {text!r}: port {port} is out of range 1-65535")
    return TargetSpec(protocol, "address", host=host.strip("[]"), port=port)


def parse_target_cmd(text: str) -> TargetSpec:
    protocol, command = _split_assignment(text, "--target-cmd")
    if "{port}" not in command:
        raise UsageError(
            f"--target-cmd {protocol}=...: the command has no {{port}}; put {{port}} where your "
            "program takes its port, e.g. 'python server.py {port}'"
        )
    return TargetSpec(protocol, "command", command=command)


def resolve_specs(targets: list[str], commands: list[str], protocols: Mapping[str, Serving]) -> list[TargetSpec]:
    """Parse --target/--target-cmd values; with neither, every protocol gets its embedded reference."""
    specs = [parse_target(t) for t in targets] + [parse_target_cmd(c) for c in commands]
    seen: set[str] = set()
    for spec in specs:
        if spec.protocol not in protocols:
            known = ", ".join(protocols)
            raise UsageError(f"unknown protocol {spec.protocol!r}; known protocols: {known}")
        if spec.protocol in seen:
            raise UsageError(f"protocol {spec.protocol!r} is given more than one target")
        seen.add(spec.protocol)
    if not specs:
        specs = [TargetSpec(name, "embedded") for name in protocols]
    return specs


def free_port(transport: str, host: str = "127.0.0.1") -> int:
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill_placeholders(command: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join("{" + key + "}" for key in values)
            raise UsageError(f"--target-cmd: unknown placeholder {{{name}}}; this protocol offers {known}")
        return values[name]

    return _PLACEHOLDER.sub(replace, command)


def udp_port_bound(port: int) -> bool | None:
    """Whether some socket is bound to this UDP port, from /proc; None when /proc cannot tell."""
    found_any_table = False
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        found_any_table = True
        for row in rows:
            local = row.split()[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False if found_any_table else None
