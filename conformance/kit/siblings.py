"""A directory beside a served root whose name begins with the root's name.

A server that confines paths with a bare ``str(path).startswith(str(root))`` lets
``ROOT/../ROOTNAME-sibling/x`` through: ``/srv/files-sibling/x`` starts with ``/srv/files``. The
path cases of every protocol that serves a directory try such names; this module makes the
directory they point into, with a secret file a leak can be recognised by.

Where the suite manages the root (the embedded target, ``--target-cmd``), the directory is made
with the root and lives as long as it. Where the user names the root (``--tftp-root``,
``--upload-root``), :func:`planted_sibling` makes it for one case only, and only if the root's
parent is writable; otherwise the probe is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SIBLING_SUFFIX", "plant_sibling", "planted_sibling", "sibling_of"]

# Appended to the root's name: the sibling's path then starts with the root's path, character
# for character, which is all a bare startswith check looks at.
SIBLING_SUFFIX = "-sibling"


def sibling_of(root: Path) -> Path:
    return root.parent / f"{root.name}{SIBLING_SUFFIX}"


def plant_sibling(root: Path, name: str, secret: bytes) -> Path:
    """Make the sibling of ``root`` with ``name`` holding ``secret``; the file's path."""
    sibling = sibling_of(root)
    sibling.mkdir(parents=True, exist_ok=True)
    path = sibling / name
    path.write_bytes(secret)
    return path


@contextlib.contextmanager
def planted_sibling(root: Path | None, name: str, secret: bytes) -> Iterator[Path | None]:
    """The sibling of ``root`` holding ``name`` for the duration, or None when it cannot be made.

    A sibling already there with that file (a managed root) is used and left in place; one made
    here is removed afterwards, with whatever a server wrote into it.
    """
    if root is None:
        yield None
        return
    sibling = sibling_of(root)
    if (sibling / name).is_file():
        yield sibling
        return
    if sibling.exists() or not os.access(root.parent, os.W_OK):
        yield None  # not ours to fill, or nowhere to put it: skip the probe
        return
    try:
        plant_sibling(root, name, secret)
    except OSError:
        shutil.rmtree(sibling, ignore_errors=True)
        yield None
        return
    try:
        yield sibling
    finally:
        shutil.rmtree(sibling, ignore_errors=True)
