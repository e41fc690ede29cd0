"""A tiny in-test protocol served by a trio TCP echo, to exercise the runner without a real one."""

from __future__ import annotations

from functools import partial

import trio

from conformance.model import Protocol
from conformance.serving import TargetEnv


async def _echo(stream: trio.SocketStream) -> None:
    async for chunk in stream:
        await stream.send_all(chunk)


async def _serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_echo, listeners)


async def start_fake(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(partial(_serve))
    return ("127.0.0.1", port)


def make_protocol(name: str = "fake", **overrides: object) -> Protocol:
    settings: dict[str, object] = dict(name=name, id_prefix=name, transport="tcp", doc="fake.md", embedded=start_fake)
    settings.update(overrides)
    return Protocol(**settings)  # type: ignore[arg-type]
