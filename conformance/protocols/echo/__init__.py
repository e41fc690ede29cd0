"""The echo protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.echo.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
