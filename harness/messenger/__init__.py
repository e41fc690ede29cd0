"""The messenger protocols: a UDP chat room and UDP broadcast presence.

Both use the IP Messenger / Feiq datagram ``version:packet_no:user:host:command:extra``
(:mod:`harness.messenger.codec`). Sans-IO cores: :mod:`~harness.messenger.codec`,
:mod:`~harness.messenger.chat_state`, :mod:`~harness.messenger.presence`. Trio wrappers:
:mod:`~harness.messenger.chat_server`, :mod:`~harness.messenger.chat_client`,
:mod:`~harness.messenger.broadcast`.
"""
