"""The TFTP protocol record, and :func:`tftp_case`, which registers a case on it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from conformance.context import CaseContext
from conformance.model import Protocol, case
from conformance.protocols.tftp.describe import VIEWS
from conformance.protocols.tftp.files import (
    write_fixtures,
)
from conformance.protocols.tftp.session import (
    Client,
    UnrequestedOption,
)
from conformance.protocols.tftp.target import (
    LIVENESS_SECONDS,
    OPTIONS,
    check_alive,
    check_fixture_files,
    prepare_command,
    start_embedded,
)
from conformance.specs import Citation
from conformance.vocabulary import Level, Unsupported

PROTO = Protocol(
    name="tftp",
    id_prefix="tftp",
    transport="udp",
    doc="tftp.md",
    describe=VIEWS,
    embedded=start_embedded,
    options=OPTIONS,
    liveness=check_alive,
    liveness_seconds=LIVENESS_SECONDS,
    preflight=check_fixture_files,
    prepare_command=prepare_command,
    write_fixtures=write_fixtures,
)
PROTOCOLS = (PROTO,)

TftpCase = Callable[[CaseContext, Client], Awaitable[None]]


def tftp_case(
    slug: str, spec: Citation, *, level: Level = Level.MUST, budget: float = 30.0, slow: bool = False
) -> Callable[[TftpCase], TftpCase]:
    """Register a case that gets a :class:`Client`, closed (open transfers aborted) when it ends."""

    def register(func: TftpCase) -> TftpCase:
        @functools.wraps(func)
        async def run(ctx: CaseContext) -> None:
            client = Client(ctx)
            try:
                await func(ctx, client)
            except UnrequestedOption as extra:
                # One root cause, failed once: by the case about it. A strict client ends such a
                # transfer, so the others cannot judge what they are about.
                if slug == "options.unrequested":
                    raise
                raise Unsupported(
                    f"not judged: {extra.summary}; tftp.options.unrequested fails a server that does this"
                ) from None
            finally:
                await client.aclose()

        case(PROTO, slug=slug, spec=spec, level=level, budget=budget, slow=slow)(run)
        return func

    return register
