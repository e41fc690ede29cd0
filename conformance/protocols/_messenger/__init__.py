"""What the chat and broadcast cases share: the suite's peers on UDP sockets and malformed datagrams.

Not a protocol: :mod:`conformance.registry` passes over packages whose name starts with ``_``.
"""
