"""The command protocol: ``PROTOCOLS`` for :mod:`conformance.registry`."""

from conformance.protocols.command.cases import PROTOCOLS

__all__ = ["PROTOCOLS"]
