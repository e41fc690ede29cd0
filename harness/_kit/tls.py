"""TLS plumbing shared by the reference servers and their commands."""

from __future__ import annotations

import os
import ssl

import trio

from harness._kit.errors import UsageError


def server_context_from_files(
    cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None
) -> ssl.SSLContext | None:
    """The server context for ``--tls-cert``/``--tls-key``; None for plain TCP; UsageError when unusable."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither for plain TCP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise UsageError(f"cannot load --tls-cert {os.fspath(cert)} / --tls-key {os.fspath(key)}: {reason}") from None
    return context


async def open_stream_listeners(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], int]:
    """TCP listeners on host:port, each wrapped in TLS when there is a context, and the bound port."""
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = tcp_listeners[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    if ssl_context is None:
        listeners = list(tcp_listeners)
    else:
        listeners = [trio.SSLListener(listener, ssl_context) for listener in tcp_listeners]
    return listeners, bound_port
