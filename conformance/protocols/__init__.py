"""One package per protocol family; each exports ``PROTOCOLS`` from its ``__init__``.

A package whose name starts with ``_`` holds support shared by several families and is not a protocol.
"""
