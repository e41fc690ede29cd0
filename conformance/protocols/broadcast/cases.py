"""The UDP broadcast presence responder (``broadcast``, ``docs/broadcast.md``).

The suite plays queriers and bystanders around a responder with its own sockets.

"Nothing more arrives" is checked after a synchronisation point where the protocol gives one: a
server handles the datagrams of one socket in order, so once the relay of a *later* message (or
the answer to a later query) has arrived, whatever the earlier datagram caused is already on its
way. A short observation window after that point leaves room for servers that use threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import trio

from conformance.context import CaseContext, Instance
from conformance.kit.datagrams import MAX_DATAGRAM
from conformance.kit.loopback_capture import SentFromPort, capture_available
from conformance.kit.search import search
from conformance.launch import free_port
from conformance.model import Protocol, case
from conformance.protocols._messenger.describe import VIEWS
from conformance.protocols._messenger.malformed import MALFORMED_EXAMPLES, leniently_readable, malformed_datagrams
from conformance.protocols._messenger.peers import SETTLE_SECONDS, Peer, Received, Sockets, name_of, settle
from conformance.protocols.broadcast import netns
from conformance.serving import TargetEnv
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level, NoAnswer, TargetUnusable, Unsupported
from harness.broadcast.server import serve_presence
from harness.messenger.wire import Command, DatagramError, decode

LOOPBACK_BROADCAST = "127.255.255.255"

# A responder answers its own announcement as soon as it reads it; this is ample for that.
OWN_ANSWER_SECONDS = 0.5
# The spec: "exactly one ANSENTRY within 1 s".
ANSWER_SECONDS = 1.0
# How long a started program gets to announce itself or answer (its start-up is not otherwise seen:
# the suite's own listeners hold its port, so the port being bound says nothing).
STARTUP_SECONDS = 5.0
# A responder that announced itself but answers no query is taken to run after this much longer.
AFTER_ANNOUNCEMENT_SECONDS = 0.5
DEATH_POLL_SECONDS = 0.05
# IP Messenger's port: a responder built from an IP Messenger client may send every answer there.
IPMSG_PORT = 2425


async def _embedded_broadcast(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(
        partial(
            serve_presence,
            name="reference",
            port=env.port,
            bind_host="0.0.0.0",
            broadcast_address=LOOPBACK_BROADCAST,
        )
    )
    return (LOOPBACK_BROADCAST, port)


async def _broadcast_alive(ctx: CaseContext) -> None:
    """A BR_ENTRY query gets an ANSENTRY, to the querier or, on this machine, anywhere else.

    A responder that answers to another port than the querier's (its own, or IP Messenger's 2425:
    common slips) is alive: the cases say where its answers went. They are seen by packet capture
    as root, else by sockets on those two ports, which take no queries away from the responder
    (queries come by broadcast).
    """
    with Sockets() as sockets:
        querier = await _querier(ctx, sockets, "liveness querier")
        seconds = ctx.target.protocol.liveness_seconds
        async with _answers_anywhere(ctx) as elsewhere:
            send_channel, receive_channel = trio.open_memory_channel[tuple[str, int]](64)
            with ctx.deadline(seconds, "waiting for ANSENTRY to a liveness query"):
                async with trio.open_nursery() as nursery:
                    if elsewhere is not None:
                        nursery.start_soon(elsewhere.answers, send_channel)

                    async def at_querier() -> None:
                        await querier.wait_for(_is_answer, seconds=float("inf"), doing="waiting for ANSENTRY")
                        await send_channel.send(querier.address)

                    nursery.start_soon(at_querier)
                    await _query(querier)
                    await receive_channel.receive()
                    nursery.cancel_scope.cancel()


class _Elsewhere:
    """Where the target's answers can be seen other than at a querier: a capture of what leaves the
    target's port (as root), or sockets on its own port and on IP Messenger's port."""

    def __init__(self, capture: SentFromPort | None, listeners: list[tuple[trio.socket.SocketType, int]]) -> None:
        self.capture = capture
        self.listeners = listeners

    async def answers(self, send_channel: trio.MemorySendChannel[tuple[str, int]]) -> None:
        """Send the destination of every ANSENTRY seen, until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.capture is not None:
                capture = self.capture

                async def captured() -> None:
                    while True:
                        payload, destination = await capture.receive()
                        if _is_ansentry(payload):
                            await send_channel.send(destination)

                nursery.start_soon(captured)
            for sock, port in self.listeners:

                async def listen(sock: trio.socket.SocketType = sock, port: int = port) -> None:
                    while True:
                        try:
                            payload, _ = await sock.recvfrom(MAX_DATAGRAM)
                        except OSError:
                            continue
                        if _is_ansentry(payload):
                            await send_channel.send(("127.0.0.1", port))

                nursery.start_soon(listen)


def _is_ansentry(payload: bytes) -> bool:
    try:
        return decode(payload).command == Command.ANSENTRY
    except DatagramError:
        return False


@contextlib.asynccontextmanager
async def _answers_anywhere(ctx: CaseContext) -> AsyncIterator[_Elsewhere | None]:
    """A watch on the target's answers wherever they go on this machine; None for a remote target.

    As root, a capture of every datagram leaving the target's port. Otherwise sockets on the two
    ports a responder answers to by mistake, its own and IP Messenger's, where they can be bound.
    """
    host, port = ctx.address
    if not host.startswith("127."):
        yield None
        return
    if capture_available():
        capture = SentFromPort(port)
        try:
            yield _Elsewhere(capture, [])
        finally:
            capture.close()
        return
    with Sockets() as sockets:
        listeners = []
        for where in (port, IPMSG_PORT):
            try:
                listeners.append((await sockets.open("127.0.0.1", where, share=True), where))
            except OSError:
                continue  # held by a program that does not share it
        yield _Elsewhere(None, listeners)


async def _where_answers_went(ctx: CaseContext, querier: Peer) -> str | None:
    """Where the answers to a new query from ``querier`` go, when it is not to it; None when unseen."""
    async with _answers_anywhere(ctx) as elsewhere:
        if elsewhere is None:
            return None
        send_channel, receive_channel = trio.open_memory_channel[tuple[str, int]](64)
        with trio.move_on_after(ctx.seconds(ANSWER_SECONDS)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(elsewhere.answers, send_channel)
                await _query(querier)
                own_port = querier.address[1]
                async for host, port in receive_channel:
                    if port != own_port:
                        nursery.cancel_scope.cancel()
                        return f"answers went to {host}:{port}, not to the sender's port {own_port}"
    return None


class AnsweredElsewhere(CaseFailed):
    """The target answers, but its answers go to another port than the querier's."""


BROADCAST = Protocol(
    name="broadcast",
    id_prefix="broadcast",
    transport="udp",
    doc="broadcast.md",
    describe=VIEWS,
    budget=15,
    embedded=_embedded_broadcast,
    command_host=LOOPBACK_BROADCAST,
    liveness=_broadcast_alive,
    shares_broadcast=True,
)
PROTOCOLS = (BROADCAST,)

BROADCAST_SPEC = "docs/broadcast.md"


def _watchable(host: str) -> bool:
    """Whether ``host`` looks like a broadcast address, where a bystander can listen without
    taking unicast datagrams away from the target."""
    return host.endswith(".255")


async def _querier(ctx: CaseContext, sockets: Sockets, name: str = "querier") -> Peer:
    # Shared, so that a bystander can watch broadcasts to the querier's port too.
    return Peer(ctx, await sockets.open(share=True, broadcast=True), ctx.address, name)


async def _bystander(sockets: Sockets, ctx: CaseContext, host: str, port: int, name: str) -> Peer | None:
    try:
        sock = await sockets.open(host, port, share=True)
    except OSError as exc:
        ctx.note(f"cannot watch {host}:{port} ({exc.strerror}); the target does not share its port (SO_REUSEADDR)")
        return None
    return Peer(ctx, sock, ctx.address, name, auto_ack=False)


async def _query(peer: Peer, *, packet_no: int | None = None) -> int:
    datagram = peer.datagram(Command.BR_ENTRY, peer.name, packet_no=packet_no)
    await peer.send(datagram)
    return datagram.packet_no


def _is_answer(received: Received) -> bool:
    return received.is_command(Command.ANSENTRY)


async def _answer(
    peer: Peer, *, since: int = 0, seconds: float = ANSWER_SECONDS, what: str = "a broadcast BR_ENTRY"
) -> Received:
    """The querier ``peer``'s answer; when none comes, a new query shows where answers go, if it can."""
    try:
        return await peer.wait_for(
            _is_answer,
            seconds=seconds,
            doing=f"waiting for ANSENTRY to {what} from the {peer}",
            since=since,
        )
    except NoAnswer as silence:
        elsewhere = await _where_answers_went(peer.ctx, peer)
        if elsewhere is None:
            raise
        raise AnsweredElsewhere(
            f"{silence.summary}: {elsewhere} (a responder answers to the address and port the query came from)",
            details=silence.details,
        ) from None


@case(BROADCAST, slug="answer", spec=ref(BROADCAST_SPEC, topic="answering BR_ENTRY"))
async def broadcast_answer(ctx: CaseContext) -> None:
    """A broadcast BR_ENTRY gets exactly one ANSENTRY within 1 s, sent to the querier's address and port."""
    with Sockets() as sockets:
        querier = await _querier(ctx, sockets)
        sent_at = trio.current_time()
        await _query(querier)
        first = await _answer(querier)
        ctx.note(f"answered by {first.source[0]}:{first.source[1]} in {(first.at - sent_at) * 1000:.0f} ms")
        await querier.observe(SETTLE_SECONDS)
        answers = querier.commands(Command.ANSENTRY)
        if len(answers) != 1:
            raise CaseFailed(
                f"one BR_ENTRY got {len(answers)} ANSENTRY answers; a responder answers once "
                "(is more than one responder listening on this port?)",
                details=querier.summary(),
            )


@case(BROADCAST, slug="answer-unicast", spec=ref(BROADCAST_SPEC, topic="answering BR_ENTRY", note="never by broadcast"))
async def broadcast_answer_unicast(ctx: CaseContext) -> None:
    """The ANSENTRY is unicast: bystanders bound to the broadcast address and either port never see it."""
    host, port = ctx.address
    if not _watchable(host):
        ctx.unsupported(f"{host} is not a broadcast address: give the target as BROADCAST_ADDRESS:PORT")
    with Sockets() as sockets:
        querier = await _querier(ctx, sockets)
        bystanders = [
            peer
            for peer in (
                await _bystander(sockets, ctx, host, port, f"bystander on {host}:{port}"),
                await _bystander(sockets, ctx, host, querier.address[1], f"bystander on {host}:{querier.address[1]}"),
            )
            if peer is not None
        ]
        await _query(querier)
        with trio.move_on_after(ctx.seconds(ANSWER_SECONDS)):
            await _answer(querier, seconds=float("inf"))
        await settle(bystanders, SETTLE_SECONDS)
        for bystander in bystanders:
            broadcast = bystander.commands(Command.ANSENTRY)
            if broadcast:
                raise CaseFailed(
                    f"the ANSENTRY was broadcast: the {bystander.name} received it; answers go unicast to the querier",
                    actual=broadcast[0].data,
                )
        if not querier.commands(Command.ANSENTRY):
            summary = f"no ANSENTRY arrived within {ctx.seconds(ANSWER_SECONDS):.1f} s, neither unicast nor broadcast"
            elsewhere = await _where_answers_went(ctx, querier)
            raise CaseFailed(
                summary if elsewhere is None else f"{summary}: {elsewhere}",
                details=querier.summary(),
            )


@case(
    BROADCAST,
    slug="repeat-once",
    spec=ref(BROADCAST_SPEC, topic="answering BR_ENTRY", note="once per source and packet_no"),
)
async def broadcast_repeat_once(ctx: CaseContext) -> None:
    """The same BR_ENTRY (same source and packet_no) sent three times is answered once."""
    with Sockets() as sockets:
        querier = await _querier(ctx, sockets)
        number = await _query(querier)
        await _answer(querier)
        for _ in range(2):
            await querier.send_bytes(querier.sent[-1])
        # A new query as the synchronisation point: its answer comes after any to the repeats.
        await _query(querier)
        with trio.move_on_after(ctx.seconds(ANSWER_SECONDS)):
            while len(querier.commands(Command.ANSENTRY)) < 2:
                await querier.receive()
        await querier.observe(SETTLE_SECONDS)
        answers = querier.commands(Command.ANSENTRY)
        if len(answers) > 2:
            raise CaseFailed(
                f"packet_no {number} sent three times, then one new query, got {len(answers)} ANSENTRY answers, "
                "not 2: a repeated query must be answered only once",
                details=querier.summary(),
            )
        if len(answers) < 2:
            raise CaseFailed(
                f"after a query sent three times, a new query (another packet_no) got no answer within "
                f"{ctx.seconds(ANSWER_SECONDS):.1f} s",
                details=querier.summary(),
            )


@case(BROADCAST, slug="two-queriers", spec=ref(BROADCAST_SPEC, topic="answering BR_ENTRY"))
async def broadcast_two_queriers(ctx: CaseContext) -> None:
    """Two queriers using the same packet_no are each answered, exactly once."""
    with Sockets() as sockets:
        first = await _querier(ctx, sockets, "first querier")
        second = await _querier(ctx, sockets, "second querier")
        number = await _query(first)
        await _query(second, packet_no=number)
        await _answer(first)
        await _answer(second, what=f"a BR_ENTRY with the same packet_no {number} as the first querier's")
        await settle((first, second), SETTLE_SECONDS)
        for querier in (first, second):
            answers = querier.commands(Command.ANSENTRY)
            if len(answers) != 1:
                raise CaseFailed(
                    f"the {querier} got {len(answers)} ANSENTRY for its one BR_ENTRY; a query gets exactly one",
                    actual=answers[1].data,
                    details=querier.summary(),
                )


async def _expect_silence(ctx: CaseContext, command: Command) -> None:
    with Sockets() as sockets:
        sender = await _querier(ctx, sockets, "sender")
        host, port = ctx.address
        bystander = None
        if _watchable(host):
            bystander = await _bystander(sockets, ctx, host, port, f"bystander on {host}:{port}")
        await sender.send(sender.datagram(command, sender.name))
        # Another peer's query as the synchronisation point. It must be answered: silence from a
        # responder that answers nothing (or answers elsewhere) proves nothing.
        syncer = await _querier(ctx, sockets, "second querier")
        await _query(syncer)
        try:
            await _answer(syncer, what=f"a BR_ENTRY sent after the {command.name}")
        except CaseFailed as failure:
            raise CaseFailed(
                f"the responder did not answer a BR_ENTRY sent after the {command.name}, so its silence to the "
                f"{command.name} says nothing: {failure.summary}",
                details=failure.details,
            ) from None
        watchers = [sender] if bystander is None else [sender, bystander]
        await settle(watchers, SETTLE_SECONDS)
        # The bystander also sees the sender's own broadcast; only the responder's datagrams count.
        broadcast = (
            []
            if bystander is None
            else [r for r in bystander.commands(Command.ANSENTRY) if r.source[1] != sender.address[1]]
        )
        replies = sender.inbox + broadcast
        if replies:
            raise CaseFailed(
                f"{command.name} sent to the responder was answered; it must record or forget the peer "
                "and answer nothing (two responders answering each other never stop)",
                actual=replies[0].data,
            )


@case(BROADCAST, slug="ansentry-silent", spec=ref(BROADCAST_SPEC, topic="ANSENTRY and BR_EXIT"))
async def broadcast_ansentry_silent(ctx: CaseContext) -> None:
    """An ANSENTRY sent to the responder gets no reply."""
    await _expect_silence(ctx, Command.ANSENTRY)


@case(BROADCAST, slug="exit-silent", spec=ref(BROADCAST_SPEC, topic="ANSENTRY and BR_EXIT"))
async def broadcast_exit_silent(ctx: CaseContext) -> None:
    """A BR_EXIT sent to the responder gets no reply."""
    await _expect_silence(ctx, Command.BR_EXIT)


BROADCAST_MALFORMED_COMMANDS = (1, 2, 3)
# The responder handles datagrams in order: once the probe's answer is in, an answer to the
# malformed datagram would be too; this much more covers a responder that uses threads.
MALFORMED_ANSWER_SECONDS = 0.03


@case(
    BROADCAST,
    slug="malformed",
    spec=(ref(BROADCAST_SPEC), ref("datagram format", note="malformed is ignored")),
    budget=45,
)
async def broadcast_malformed(ctx: CaseContext) -> None:
    """Malformed datagrams and random bytes (hypothesis) are not answered and do not stop the answers."""
    with Sockets() as sockets:
        sender = await _querier(ctx, sockets, "sender")
        querier = await _querier(ctx, sockets, "querier")
        # A responder whose answers never reach a querier fails here, not on the first example.
        await _query(querier)
        await _answer(querier, what="a well-formed BR_ENTRY, before any malformed one")

        async def check(data: bytes) -> None:
            since = len(sender.inbox)
            await sender.send_bytes(data)
            asked = len(querier.inbox)
            await _query(querier)
            try:
                await _answer(querier, since=asked, seconds=2.0, what="a BR_ENTRY sent after the malformed one")
            except AnsweredElsewhere:
                raise
            except CaseFailed as failure:
                raise CaseFailed(
                    f"after that datagram, the responder stopped answering: {failure.summary}", sent=data
                ) from None
            await sender.observe(MALFORMED_ANSWER_SECONDS)
            answers = sender.inbox[since:]
            if answers and not leniently_readable(data):
                raise CaseFailed("the responder answered a malformed datagram", sent=data, actual=answers[0].data)

        await search(ctx, malformed_datagrams(BROADCAST_MALFORMED_COMMANDS), check, always=MALFORMED_EXAMPLES)


@dataclass
class _Watch:
    """Listeners for a fresh instance's start and stop, set up before it starts on ``port``."""

    port: int
    #: Sees what is broadcast to (broadcast address, port).
    bystander: Peer
    #: Sees what is sent to the instance's own unicast address (127.0.0.1, port), when asked for.
    spy: Peer | None
    #: Watched by packet capture, not by sockets sharing the port: a program that cannot start is
    #: then broken, not merely unwilling to share its port.
    captured: bool


async def _watched_instance(ctx: CaseContext, sockets: Sockets, *, spy: bool = False) -> _Watch:
    """A port for a fresh instance, with a bystander watching broadcasts to it and with ``spy``
    one watching its own unicast address.

    As root on Linux the suite captures on the loopback interface and holds no socket on the
    port, so any responder can start, SO_REUSEADDR or not. Otherwise it binds the port shared
    (a bystander on the broadcast address; a spy on 127.0.0.1, a more specific match than the
    instance's wildcard bind), and a program that does not share its port cannot be watched.
    """
    if ctx.target.kind == "address":
        ctx.unsupported("needs a responder the suite starts itself (embedded or --target-cmd)")
    port = free_port("udp")
    host = ctx.target.host
    captured = host.startswith("127.") and capture_available()

    async def watcher(address: str, name: str) -> Peer:
        sock = sockets.capture(address, port) if captured else await sockets.open(address, port, share=True)
        return Peer(ctx, sock, (host, port), f"{name} {address}:{port}", auto_ack=False)

    bystander = await watcher(host, "bystander on")
    watching = await watcher("127.0.0.1", "listener on") if spy else None
    return _Watch(port, bystander, watching, captured)


def _unless_it_died(instance: Instance, watch: _Watch) -> None:
    """A started program that exits at once: broken, or, when the suite shared its port, most likely
    unable to bind it (then the case is unsupported)."""
    death = None if instance.process is None else instance.process.describe_exit()
    if death is not None:
        assert instance.process is not None
        output = " | ".join(instance.process.output_since(0, limit=3)) or "nothing"
        if watch.captured:
            raise CaseFailed(f"the started program stopped on its own ({death}); its output: {output}")
        raise Unsupported(
            f"the program stopped as it started ({death}) while the suite listened on its port; it must set "
            f"SO_REUSEADDR for the suite to see what it sends as it starts and stops (its output: {output}); "
            "run the suite as root to watch it by packet capture instead"
        )


@contextlib.asynccontextmanager
async def _unless_it_dies(instance: Instance, watch: _Watch) -> AsyncIterator[None]:
    """Run the block, but stop at once (as :func:`_unless_it_died`) if the started program exits."""
    if instance.process is None:
        yield
        return
    async with trio.open_nursery() as nursery:

        async def check() -> None:
            while True:
                _unless_it_died(instance, watch)
                # Polling the process is the only signal a program's death gives a Trio task here.
                await trio.sleep(DEATH_POLL_SECONDS)

        nursery.start_soon(check)
        try:
            yield
        except CaseFailed:
            _unless_it_died(instance, watch)
            raise
        finally:
            nursery.cancel_scope.cancel()


def _could_not_start(exc: TargetUnusable, watch: _Watch) -> Exception:
    reason = str(exc).splitlines()[0]
    if watch.captured:
        return CaseFailed(f"the program did not start a second time on another port: {reason}")
    return Unsupported(
        "the program did not start while the suite listened on its port; it must set SO_REUSEADDR "
        f"for the suite to see what it sends as it starts and stops ({reason}); run the suite as root to "
        "watch it by packet capture instead"
    )


async def _announcement(bystander: Peer, port: int) -> Received:
    return await bystander.wait_for(
        lambda r: r.is_command(Command.BR_ENTRY) and r.source[1] == port,
        seconds=STARTUP_SECONDS,
        doing=f"waiting for the start announcement: BR_ENTRY broadcast to {bystander.server[0]}:{port}",
    )


@case(BROADCAST, slug="start-announcement", spec=ref(BROADCAST_SPEC, topic="start and shutdown"), budget=20)
async def broadcast_start_announcement(ctx: CaseContext) -> None:
    """On start the responder broadcasts BR_ENTRY from its port, with its name in user and extra."""
    with Sockets() as sockets:
        watch = await _watched_instance(ctx, sockets)
        try:
            async with ctx.fresh_instance(port=watch.port) as instance, _unless_it_dies(instance, watch):
                announcement = await _announcement(watch.bystander, watch.port)
        except TargetUnusable as exc:
            raise _could_not_start(exc, watch) from None
        assert announcement.datagram is not None
        if name_of(announcement.datagram) != announcement.datagram.user:
            raise CaseFailed(
                "the start announcement does not carry the responder's name in both user and extra",
                expected="1:<packet_no>:NAME:<host>:1:NAME",
                actual=announcement.data,
            )


@case(
    BROADCAST,
    slug="own-broadcast",
    spec=ref(BROADCAST_SPEC, topic="answering BR_ENTRY", note="never its own"),
    budget=20,
)
async def broadcast_own_broadcast(ctx: CaseContext) -> None:
    """The responder does not answer its own start announcement, which it receives too."""
    with Sockets() as sockets:
        watch = await _watched_instance(ctx, sockets, spy=True)
        port, spy = watch.port, watch.spy
        assert spy is not None
        try:
            async with ctx.fresh_instance(port=port) as instance, _unless_it_dies(instance, watch):
                try:
                    await _announcement(watch.bystander, port)
                except CaseFailed:
                    raise Unsupported("no start announcement was seen, so there is no own broadcast to watch") from None
                # It answers its own announcement as soon as it receives it, if it does; nobody else
                # sends to its unicast address (a sync query could be answered there by mistake).
                await spy.observe(OWN_ANSWER_SECONDS)
        except TargetUnusable as exc:
            raise _could_not_start(exc, watch) from None
        own = spy.commands(Command.ANSENTRY)
        if own:
            raise CaseFailed(
                f"the responder answered its own BR_ENTRY: an ANSENTRY went to its own address 127.0.0.1:{port}",
                actual=own[0].data,
            )


@case(BROADCAST, slug="exit-on-sigterm", spec=ref(BROADCAST_SPEC, topic="start and shutdown"), budget=20)
async def broadcast_exit_on_sigterm(ctx: CaseContext) -> None:
    """On SIGTERM (or cancellation of the embedded reference) the responder broadcasts BR_EXIT."""
    with Sockets() as sockets:
        watch = await _watched_instance(ctx, sockets)
        port, bystander = watch.port, watch.bystander
        try:
            async with ctx.fresh_instance(port=port) as instance:
                async with _unless_it_dies(instance, watch):
                    await _until_running(ctx, sockets, instance, bystander)
                since = len(bystander.inbox)
                await instance.stop()
                await bystander.wait_for(
                    lambda r: r.is_command(Command.BR_EXIT) and r.source[1] == port,
                    seconds=2.0,
                    doing=f"waiting for BR_EXIT broadcast to {ctx.target.host}:{port} after SIGTERM",
                    since=since,
                )
        except TargetUnusable as exc:
            raise _could_not_start(exc, watch) from None


async def _until_running(ctx: CaseContext, sockets: Sockets, instance: Instance, bystander: Peer) -> None:
    """Wait until the instance shows it runs: its start announcement, or an answer to a query."""
    querier = await _querier(ctx, sockets)
    querier.server = instance.address

    async def announced(cancel: trio.CancelScope) -> None:
        await bystander.wait_for(
            lambda r: r.is_command(Command.BR_ENTRY) and r.source[1] == instance.port, seconds=float("inf"), doing=""
        )
        # It may still be between its announcement and its main loop (and its shutdown handling).
        await trio.sleep(ctx.seconds(AFTER_ANNOUNCEMENT_SECONDS))
        cancel.cancel()

    async def answered(cancel: trio.CancelScope) -> None:
        while True:
            await _query(querier)
            with trio.move_on_after(ctx.seconds(0.5)):
                await querier.wait_for(_is_answer, seconds=float("inf"), doing="")
                cancel.cancel()

    with ctx.deadline(STARTUP_SECONDS, "waiting for the started responder to announce itself or answer a query"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announced, nursery.cancel_scope)
            nursery.start_soon(answered, nursery.cancel_scope)


@case(
    BROADCAST,
    slug="netns",
    spec=ref(BROADCAST_SPEC, topic="binding", note="real broadcast between hosts"),
    budget=40,
    level=Level.MUST,
)
async def broadcast_netns(ctx: CaseContext) -> None:
    """Two responders in separate network namespaces on a bridge discover each other by real broadcast."""
    await netns.check_discovery_across_namespaces(ctx)
