"""Errors shared by the harness commands."""


class UsageError(Exception):
    """A user mistake: the command prints ``harness: <message>`` and exits 2, with no traceback."""
