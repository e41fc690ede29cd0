"""What a target is: the serving side of a protocol record and what its hooks are given.

No process management and no cases here: :mod:`conformance.hosting` starts targets from these
records, and :class:`conformance.model.Protocol` extends :class:`Serving` with cases and checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from harness._kit.tls import TlsFiles, make_tls_files

# Starts the embedded reference server in the nursery; returns the (host, port) to test.
EmbeddedStarter = Callable[[trio.Nursery, "TargetEnv"], Awaitable[tuple[str, int]]]
# Writes whatever a program started with --target-cmd needs; returns extra {placeholder: value}.
CommandPreparer = Callable[["TargetEnv"], Mapping[str, str]]


@dataclass(eq=False, kw_only=True)
class Serving:
    """How a protocol's targets are started and reached, whatever cases run against them."""

    name: str
    transport: str  # "tcp" or "udp"
    embedded: EmbeddedStarter
    tls: bool = False
    prepare_command: CommandPreparer | None = None
    # Address the suite uses for a program it starts; a broadcast responder is tested through
    # the broadcast address rather than its unicast one.
    command_host: str = "127.0.0.1"
    # Deadline of one liveness check, before --timeout-scale. A protocol whose check waits out a
    # busy target (a server still finishing an earlier transfer) sets a longer one.
    liveness_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be tcp or udp, not {self.transport!r}")


@dataclass
class TargetEnv:
    """What a protocol's hooks get when preparing a target: options, a private directory, TLS files."""

    protocol: Serving
    options: Mapping[str, Any]
    directory: Path
    timeout_scale: float
    attributes: dict[str, Any] = field(default_factory=dict)
    # The port the embedded reference must bind, 0 for any free one. Only a case's fresh instance
    # asks for a port (see CaseContext.fresh_instance), for example one it already listens on.
    port: int = 0
    _tls: TlsFiles | None = None

    def tls_files(self) -> TlsFiles:
        if self._tls is None:
            self._tls = make_tls_files(self.directory)
        return self._tls
