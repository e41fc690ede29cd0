"""The tftp protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.tftp.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
