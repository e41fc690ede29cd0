"""TFTP (RFC 1350, 2347, 2348, 2349, 7440): sans-IO core, Trio server and client.

Sans-IO, no trio, sockets, clocks or files: :mod:`~harness.tftp.wire` (packets),
:mod:`~harness.tftp.options`, :mod:`~harness.tftp.netascii`, :mod:`~harness.tftp.blocks`
(block numbers and rollover), :mod:`~harness.tftp.machine` (Sender / Receiver state
machines) and :mod:`~harness.tftp.errors`.

Trio: :func:`harness.tftp.server.serve_tftp`, :func:`harness.tftp.client.tftp_get` and
:func:`harness.tftp.client.tftp_put`. This package imports none of them itself, so that the
sans-IO modules can be used without Trio.
"""
