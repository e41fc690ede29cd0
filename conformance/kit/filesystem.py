"""The target's file system, where the suite can see it: its root, names that lead out of it, and what is on disk.

Protocols that serve a directory (tftp, upload) are asked for files outside it by names of the
same few kinds: ``../NAME``, ``a/../../NAME``, an absolute path, and ``../ROOT-sibling/NAME``
(see :mod:`conformance.kit.siblings`). :func:`routes_up` and :func:`routes_beside` make them, each
with the place a file written through it would land, so that a case can look there afterwards.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conformance.context import CaseContext
from conformance.kit.siblings import plant_sibling
from conformance.serving import TargetEnv

__all__ = [
    "ABSOLUTE",
    "NESTED",
    "UP",
    "Route",
    "files_under",
    "local_root",
    "make_root",
    "routes_beside",
    "routes_up",
]


def make_root(env: TargetEnv, outside_name: str, secret: bytes) -> Path:
    """The directory a target the suite manages serves: ``root`` in the target's private directory,
    recorded as its ``root`` attribute (see :func:`local_root`), with ``secret`` in a file named
    ``outside_name`` beside it and in the sibling directory (the files a path case must never reach)."""
    root = env.directory / "root"
    root.mkdir(parents=True, exist_ok=True)
    (env.directory / outside_name).write_bytes(secret)
    plant_sibling(root, outside_name, secret)
    env.attributes["root"] = root
    return root


def local_root(ctx: CaseContext, option: str) -> Path | None:
    """The directory the target serves, when it is on this machine: the root of a target the suite
    manages, else the directory the user named with ``option`` (``tftp_root``, ``upload_root``)."""
    root = ctx.target.attributes.get("root")
    if root is not None:
        return Path(root)
    given = ctx.option(option)
    return Path(given) if given else None


def files_under(root: Path) -> set[Path]:
    """Every file (not folder) under ``root``, as paths relative to it."""
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(Path(folder, name).relative_to(root))
    return found


@dataclass(frozen=True, slots=True)
class Route:
    """A name that leads outside a served root."""

    #: How it leads out, for messages.
    what: str
    #: The name as sent.
    name: str
    #: Where a file written through ``name`` lands, when this host can see the root; else None.
    landing: Path | None


# The kinds of route, each given its own file name by a case that writes through them.
UP, NESTED, ABSOLUTE = "up", "nested", "absolute"


def _naming(name: str | Callable[[str], str]) -> Callable[[str], str]:
    return name if callable(name) else lambda _kind: name


def routes_up(root: Path | None, name: str | Callable[[str], str], *, nested: str | None = None) -> list[Route]:
    """``../NAME``, then ``NESTED/../../NAME`` (with ``nested``), then the absolute path of NAME beside
    the root (in the temporary directory when the root is not known here).

    ``name`` is the file name, or a function giving one per kind of route (:data:`UP`,
    :data:`NESTED`, :data:`ABSOLUTE`), so that each write lands in a file of its own.
    """
    named = _naming(name)
    outside = root.parent if root is not None else None
    base = outside if outside is not None else Path(tempfile.gettempdir())

    def route(what: str, sent: str, path: Path) -> Route:
        return Route(what, sent, path if outside is not None else None)

    routes = [route("'../' leading out of the root", f"../{named(UP)}", base / named(UP))]
    if nested is not None:
        routes.append(
            route(f"'{nested}/../../' leading out of the root", f"{nested}/../../{named(NESTED)}", base / named(NESTED))
        )
    absolute = base / named(ABSOLUTE)
    routes.append(route("an absolute path", str(absolute), absolute))
    return routes


def routes_beside(sibling: Path | None, name: str, *, absolute: bool = False) -> list[Route]:
    """``../ROOT-sibling/NAME`` into the sibling directory (a bare ``startswith(root)`` check lets it
    through), and with ``absolute`` its absolute path too; none without a sibling."""
    if sibling is None:
        return []
    into = sibling / name
    routes = [Route("'../' into a folder beside the root named after it", f"../{sibling.name}/{name}", into)]
    if absolute:
        routes.append(Route("an absolute path into a folder beside the root", str(into), into))
    return routes
