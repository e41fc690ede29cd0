"""The messenger protocols: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.messenger.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
