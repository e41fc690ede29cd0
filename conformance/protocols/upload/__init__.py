"""The upload protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.upload.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
