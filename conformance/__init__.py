"""Conformance suite for the course socket protocols.

Cases are plain async functions over a :class:`~conformance.context.CaseContext`; the same cases run
from the ``conformance`` command and, through the ``pytest11`` plugin, as ordinary pytest items.
"""
