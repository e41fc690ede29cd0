"""The rules for ``file_name``, kept apart from the codec so that servers and tests can reuse them.

A name is a relative POSIX path of 1-255 UTF-8 bytes with no empty, ``.`` or ``..`` components, no
leading ``/``, no backslash and no NUL. These checks are purely lexical: they never touch a file system.
"""

from __future__ import annotations

from pathlib import Path

# The limit is on the encoded name, so that every component also fits NAME_MAX (255) on common
# file systems.
MAX_NAME_BYTES = 255


def file_name_problem(name: str) -> str | None:
    """Say why ``name`` is not a valid ``file_name``, or return ``None`` if it is."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can carry lone surrogates ("\ud800"), which have no UTF-8 form.
        return "file_name is not valid UTF-8"
    if not encoded:
        return "file_name is empty"
    if len(encoded) > MAX_NAME_BYTES:
        return f"file_name is {len(encoded)} bytes long, over the limit of {MAX_NAME_BYTES}"
    if "\x00" in name:
        return "file_name contains a NUL byte"
    if "\\" in name:
        return "file_name contains a backslash"
    if name.startswith("/"):
        return "file_name is an absolute path"
    for component in name.split("/"):
        if component == "":
            return "file_name has an empty path component"
        if component in (".", ".."):
            return f"file_name has a {component!r} path component"
    return None


def path_under_root(root: Path, name: str) -> Path:
    """The path where ``name`` is stored under ``root``; ``name`` must be valid.

    Raises ``ValueError`` for an invalid name, so that a caller that skipped the check still cannot
    be led outside ``root``.
    """
    problem = file_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return root.joinpath(*name.split("/"))
