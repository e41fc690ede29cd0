"""One module per protocol family; each exports ``PROTOCOLS`` for :mod:`conformance.registry`."""
