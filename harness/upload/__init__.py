"""Framed file upload (protocol ``upload``): a 4-byte length, a JSON header, then the file bytes.

``codec`` and ``names`` are the sans-IO core shared by the reference server (``server``), the reference
client (``client``) and the conformance cases; ``commands`` adds ``harness serve upload`` and
``harness upload``.
"""

DEFAULT_PORT = 9904
