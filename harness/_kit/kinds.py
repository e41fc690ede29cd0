"""Naming datagrams by kind (sans-IO), so that the UDP relay's rules can say "the 3rd ACK".

Each protocol's ``wire`` module that can name its datagrams defines ``KINDS`` (the names it can
return) and ``classify(payload) -> str``. A classifier never raises: what it cannot recognise is
:data:`OTHER`.
"""

from __future__ import annotations

from collections.abc import Callable

#: The kind of a datagram that its classifier does not recognise.
OTHER = "other"

#: Selector kind that matches every datagram, whatever the classifier.
ANY = "any"

Classifier = Callable[[bytes], str]
