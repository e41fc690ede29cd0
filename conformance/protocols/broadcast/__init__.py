"""The broadcast protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.broadcast.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
