"""The messenger protocols: a UDP chat room and UDP broadcast presence.

Both use the IP Messenger / Feiq datagram ``version:packet_no:user:host:command:extra``
(:mod:`harness.messenger.wire`). Sans-IO cores: :mod:`~harness.messenger.wire`,
:mod:`~harness.chat.machine`, :mod:`~harness.broadcast.machine`. Trio wrappers:
:mod:`~harness.chat.server`, :mod:`~harness.chat.client`,
:mod:`~harness.broadcast.server`.
"""
