"""TLS plumbing shared by the reference servers, their commands and the conformance suite.

The suite's material is a throwaway trustme CA for embedded and started targets, or the user's CA file.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme

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


async def open_client_stream(
    host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> trio.abc.Stream:
    """A connection to host:port, TLS (handshake done) when there is a context.

    Raises :class:`OSError` when the connection fails and :class:`trio.BrokenResourceError` when
    the TLS handshake fails.
    """
    stream = await trio.open_tcp_stream(host, port)
    if ssl_context is None:
        return stream
    tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname or host)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


def connect_reason(exc: OSError) -> str:
    """Why a connection failed, in a few words (``Connection refused``)."""
    # trio reports "all attempts to connect ... failed" and chains the per-address errors.
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return exc.strerror or str(exc)


async def connect_or_fail(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float,
    failure: Callable[[str], Exception],
    too_slow: Callable[[str], Exception] | None = None,
) -> trio.abc.Stream:
    """:func:`open_client_stream` within ``timeout`` seconds, for a command's user.

    Its errors are raised as ``failure(message)``, and running out of time as ``too_slow(message)``
    (``failure`` when there is none).
    """
    with trio.move_on_after(timeout):
        try:
            return await open_client_stream(host, port, ssl_context=ssl_context, server_hostname=server_hostname)
        except OSError as exc:
            raise failure(f"cannot connect to {host}:{port}: {connect_reason(exc)}") from exc
        except trio.BrokenResourceError as exc:
            raise failure(f"TLS handshake with {host}:{port} failed: {exc.__cause__ or exc}") from exc
    raise (too_slow or failure)(f"cannot connect to {host}:{port} within {timeout:g} s")


# Names the embedded certificate is valid for, so clients may use any loopback spelling.
SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh CA and a server certificate for the loopback names into ``directory``."""
    ca = trustme.CA()
    server = ca.issue_cert(*SERVER_NAMES)
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    # The chain file holds the leaf followed by its issuers, as servers expect.
    with open(files.cert, "wb") as out:
        out.writelines(blob.bytes() for blob in server.cert_chain_pems)
    server.private_key_pem.write_to_path(str(files.key))
    return files


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
