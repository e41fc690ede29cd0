"""The chat protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.chat.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
