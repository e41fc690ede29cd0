"""Real broadcast between hosts: two responders in network namespaces joined by a bridge.

On loopback every "host" is the same machine, so a responder that only works there (one that
answers from the loopback address, or receives only what is sent to 127.255.255.255) looks
fine. Here the suite builds a small network of its own, entirely inside namespaces it creates:

    namespace A (10.213.7.1/24) -- veth -- namespace BR (bridge br0) -- veth -- namespace B (10.213.7.2/24)

and runs one responder in A and one in B: the embedded reference as ``python -m harness serve
broadcast``, or the ``--target-cmd`` program. A querier in each of A and B broadcasts ``BR_ENTRY``
to 10.213.7.255 and must be answered by both responders, the one across the bridge included.
Nothing is sent outside these namespaces, and they are deleted however the case ends.

This needs Linux, root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and ``ip`` from iproute2; elsewhere
the case is unsupported.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import trio

import harness
from conformance.context import CaseContext
from conformance.hosting import ManagedProcess
from conformance.launch import fill_placeholders
from conformance.protocols._messenger.peers import Peer
from conformance.recording import record_socket
from conformance.vocabulary import CaseFailed, Unsupported
from harness.messenger.wire import Command

SUBNET = "10.213.7"
BRIDGE_BROADCAST = f"{SUBNET}.255"
# Inside fresh namespaces every port is free, so the responders use the protocol's usual one.
PORT = 7788
# How long the two responders get to start and answer; queries are repeated meanwhile.
DISCOVERY_SECONDS = 5.0
QUERY_INTERVAL = 0.5
IP_SECONDS = 5.0
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class _Host:
    namespace: str
    address: str
    name: str


def _unsupported_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "creating network namespaces needs the ip command (iproute2)"
    return None


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unsupported(f"ip {' '.join(args)} failed: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"status {done.returncode}"
        raise Unsupported(f"cannot build the namespace network: ip {' '.join(args)}: {reason}")


def _build(bridge: str, hosts: list[_Host]) -> list[str]:
    """Create the namespaces and the bridge; returns the namespaces created (to delete), even on failure."""
    created: list[str] = []
    try:
        for namespace in (bridge, *(host.namespace for host in hosts)):
            _ip("netns", "add", namespace)
            created.append(namespace)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for index, host in enumerate(hosts):
            port_name = f"port{index}"
            # Both ends are created inside namespaces: the machine's own network is never touched.
            _ip(
                "link",
                "add",
                "eth0",
                "netns",
                host.namespace,
                "type",
                "veth",
                "peer",
                "name",
                port_name,
                "netns",
                bridge,
            )
            _ip("-n", bridge, "link", "set", port_name, "master", "br0")
            _ip("-n", bridge, "link", "set", port_name, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "brd", "+", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
    except BaseException:
        _remove(created)
        raise
    return created


def _remove(namespaces: list[str]) -> None:
    for namespace in namespaces:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=IP_SECONDS, check=False)


def _socket_in(namespace: str) -> socket.socket:
    """A broadcast-capable UDP socket created inside ``namespace``.

    A socket belongs to the namespace it was created in. A short-lived thread switches its own
    namespace (setns affects only the calling thread), creates the socket and ends.
    """
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    number = ctypes.get_errno()
                    raise OSError(number, f"setns: {os.strerror(number)}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("0.0.0.0", 0))
            made.append(sock)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=create, name=f"socket in {namespace}")
    thread.start()
    thread.join()
    if errors:
        raise Unsupported(f"cannot open a socket in namespace {namespace}: {errors[0]}")
    return made[0]


def _responder_command(ctx: CaseContext, host: _Host) -> str:
    if ctx.target.kind == "command":
        assert ctx.target.spec.command is not None
        program = fill_placeholders(ctx.target.spec.command, {"port": str(PORT), "host": host.address})
    else:
        root = Path(harness.__file__).resolve().parent.parent
        program = shlex.join(
            [
                "env",
                f"PYTHONPATH={root}",
                sys.executable,
                "-m",
                "harness",
                "serve",
                "broadcast",
                "--port",
                str(PORT),
                "--name",
                host.name,
                "--broadcast-address",
                BRIDGE_BROADCAST,
            ]
        )
    return f"ip netns exec {shlex.quote(host.namespace)} {program}"


async def check_discovery_across_namespaces(ctx: CaseContext) -> None:
    if ctx.target.kind == "address":
        ctx.unsupported("needs responders the suite starts itself (embedded or --target-cmd)")
    reason = _unsupported_reason()
    if reason is not None:
        ctx.unsupported(reason)
    prefix = f"conf{os.getpid()}{secrets.token_hex(2)}"
    hosts = [_Host(f"{prefix}-a", f"{SUBNET}.1", "host-a"), _Host(f"{prefix}-b", f"{SUBNET}.2", "host-b")]
    created = await trio.to_thread.run_sync(_build, f"{prefix}-br", hosts)
    processes: list[ManagedProcess] = []
    sockets: list[trio.socket.SocketType] = []
    try:
        for host in hosts:
            processes.append(ManagedProcess(_responder_command(ctx, host)))
        queriers = []
        for host in hosts:
            sock = record_socket(
                trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(_socket_in, host.namespace))
            )
            sockets.append(sock)
            queriers.append(Peer(ctx, sock, (BRIDGE_BROADCAST, PORT), f"querier in {host.name}"))
        try:
            async with trio.open_nursery() as nursery:
                for querier in queriers:
                    nursery.start_soon(_discover, ctx, querier, hosts, processes)
        except CaseFailed as failure:
            outputs = []
            for host, process in zip(hosts, processes, strict=False):
                lines = process.output_since(0, limit=10)
                death = process.describe_exit()
                outputs.append(f"responder in {host.name} ({host.address})" + (f", {death}" if death else "") + ":")
                outputs.extend("  | " + line for line in lines)
            failure.details = "\n".join(filter(None, [failure.details, *outputs]))
            raise
        ctx.note(f"each querier heard both responders on {SUBNET}.0/24 ({', '.join(h.address for h in hosts)})")
    finally:
        for sock in sockets:
            sock.close()
        with trio.CancelScope(shield=True):
            for process in processes:
                await trio.to_thread.run_sync(process.stop)
            await trio.to_thread.run_sync(_remove, created)


async def _discover(ctx: CaseContext, querier: Peer, hosts: list[_Host], processes: list[ManagedProcess]) -> None:
    """Broadcast BR_ENTRY (a new packet_no each time) until both responders have answered."""
    wanted = {host.address for host in hosts}

    def heard() -> set[str]:
        return {r.source[0] for r in querier.commands(Command.ANSENTRY)} & wanted

    with trio.move_on_after(ctx.seconds(DISCOVERY_SECONDS)):
        while heard() != wanted:
            for process in processes:
                death = process.describe_exit()
                if death is not None:
                    raise CaseFailed(f"a responder stopped while being discovered: {death}")
            await querier.send(querier.datagram(Command.BR_ENTRY, querier.name))
            await querier.observe(QUERY_INTERVAL)
    missing = sorted(wanted - heard())
    if missing:
        raise CaseFailed(
            f"the {querier.name} broadcast BR_ENTRY to {BRIDGE_BROADCAST}:{PORT} for "
            f"{ctx.seconds(DISCOVERY_SECONDS):.0f} s and never got ANSENTRY from {', '.join(missing)}",
            details=querier.summary(),
        )
