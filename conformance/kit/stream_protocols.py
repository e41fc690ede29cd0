"""A protocol spoken over TCP and, the same, over TLS: the pair of records such a protocol registers.

Its embedded reference is one starter told ``tls=`` which of the two it serves, and a target is alive
when it accepts a connection (over TLS: completes the handshake).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Protocol as Signature

import trio

from conformance.context import CaseContext
from conformance.model import Option, Protocol
from conformance.serving import CommandPreparer, TargetEnv
from conformance.transcript import BYTE_EXCERPTS, Describer

__all__ = ["accepts", "tcp_and_tls"]


class TlsStarter(Signature):
    def __call__(self, nursery: trio.Nursery, env: TargetEnv, *, tls: bool) -> Awaitable[tuple[str, int]]: ...


async def accepts(ctx: CaseContext) -> None:
    """Liveness of a stream server: it accepts a connection."""
    await ctx.connect()


def tcp_and_tls(
    *,
    name: str,
    doc: str,
    embedded: TlsStarter,
    describe: Describer = BYTE_EXCERPTS,
    options: tuple[Option, ...] = (),
    prepare_command: CommandPreparer | None = None,
    write_fixtures: Callable[[Path], None] | None = None,
) -> tuple[Protocol, Protocol]:
    """``NAME`` (case ids ``NAME.tcp.*``) and ``NAME-tls`` (``NAME.tls.*``)."""
    plain = Protocol(
        name=name,
        id_prefix=f"{name}.tcp",
        transport="tcp",
        doc=doc,
        describe=describe,
        embedded=partial(embedded, tls=False),
        options=options,
        liveness=accepts,
        prepare_command=prepare_command,
        write_fixtures=write_fixtures,
    )
    return plain, plain.over_tls(partial(embedded, tls=True))
