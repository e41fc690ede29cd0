"""Packet capture on loopback: datagrams to one (address, port), seen without binding the port."""

from __future__ import annotations

import socket

import pytest
import trio

from conformance.kit.loopback_capture import CaptureSocket, capture_available, parse_udp
from conformance.launch import free_port

needs_capture = pytest.mark.skipif(not capture_available(), reason="needs CAP_NET_RAW (root) on Linux")


def test_parse_udp_reads_addresses_ports_and_payload() -> None:
    payload = b"1:2:a:b:3:c"
    udp = (4242).to_bytes(2, "big") + (7788).to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0"
    ip = bytes([0x45, 0]) + (20 + len(udp) + len(payload)).to_bytes(2, "big") + bytes(5) + bytes([17]) + bytes(2)
    ip += socket.inet_aton("127.0.0.1") + socket.inet_aton("127.255.255.255")
    assert parse_udp(ip + udp + payload) == ("127.0.0.1", 4242, "127.255.255.255", 7788, payload)
    assert parse_udp(b"\x60" + bytes(39)) is None  # IPv6
    assert parse_udp(ip[:9] + bytes([6]) + ip[10:] + udp) is None  # TCP
    assert parse_udp(ip[:10]) is None


@needs_capture
async def test_only_datagrams_to_the_watched_address_and_port_arrive_while_the_port_is_held() -> None:
    port = free_port("udp")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as owner,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        owner.bind(("0.0.0.0", port))  # no SO_REUSEADDR: nobody else could bind it
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sender.bind(("127.0.0.1", 0))
        broadcast = CaptureSocket("127.255.255.255", port)
        unicast = CaptureSocket("127.0.0.1", port)
        try:
            sender.sendto(b"to another port", ("127.255.255.255", port + 1 if port < 65535 else port - 1))
            sender.sendto(b"to the broadcast address", ("127.255.255.255", port))
            sender.sendto(b"to its unicast address", ("127.0.0.1", port))
            with trio.fail_after(5):
                assert await broadcast.recvfrom(100) == (b"to the broadcast address", sender.getsockname())
                assert await unicast.recvfrom(100) == (b"to its unicast address", sender.getsockname())
            with trio.move_on_after(0.2):
                extra = await broadcast.recvfrom(100)
                pytest.fail(f"unexpected datagram {extra!r}")
            # The owner got them too: capture takes nothing away.
            owner.settimeout(1)
            assert {owner.recv(100), owner.recv(100)} == {b"to the broadcast address", b"to its unicast address"}
        finally:
            broadcast.close()
            unicast.close()
