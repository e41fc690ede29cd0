"""TFTP (RFC 1350, 2347, 2348, 2349, 7440): sans-IO codec and state machines, Trio server and client.

Modules: :mod:`~harness.tftp.codec` (packets), :mod:`~harness.tftp.options`,
:mod:`~harness.tftp.netascii`, :mod:`~harness.tftp.blocks` (block numbers and rollover),
:mod:`~harness.tftp.transfer` (Sender / Receiver state machines) are sans-IO;
:mod:`~harness.tftp.server` and :mod:`~harness.tftp.client` wrap them with Trio.
"""

from harness.tftp.client import TransferInfo, tftp_get, tftp_put
from harness.tftp.errors import ErrorCode, TftpError
from harness.tftp.server import DEFAULT_PORT, serve_tftp

__all__ = ["DEFAULT_PORT", "ErrorCode", "TftpError", "TransferInfo", "serve_tftp", "tftp_get", "tftp_put"]
