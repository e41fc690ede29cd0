"""The conformance core imports downward only, as h11's ``_events`` <- ``_state`` <- ``_connection``.

Every import is counted: module-level, inside functions, and under ``if TYPE_CHECKING:``, so that an
upward edge cannot hide in a function body or a type-only block.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conformance

PACKAGE = Path(conformance.__file__).parent

# Bottom first. A module may import from the layers below its own, never from its own or above.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Self-contained helpers: no import of the core at all.
    ("showbytes", "signals", "selection", "output", "provenance", "transcript", "scheduling"),
    ("vocabulary", "recording", "ladder"),
    ("specs",),
    ("serving",),
    ("launch",),
    ("hosting",),
    ("context",),
    ("model",),
    (
        "kit.streams",
        "kit.search",
        "kit.siblings",
        "kit.loopback_capture",
        "kit.datagrams",
        "kit.failures",
        "kit.payloads",
        "kit.segments",
        "kit.stream_protocols",
        "kit.stream_views",
    ),
    ("kit.filesystem", "kit.reply_streams"),
    ("registry",),
    ("runner",),
    ("report", "report_paths", "pcapng"),
    ("markdown_report", "html_report"),
    # Points and the grading platforms' files: a rubric, the score under it, then each platform's shape.
    ("grading.rubric",),
    ("grading.score",),
    ("grading.feedback",),
    ("grading.gradescope", "grading.classroom", "grading.prairielearn"),
    ("grading.outputs",),
    # A roster graded at once: the file, the gradebook from reports, the runs, the class matrix, the
    # reports merge reads, the one path grade and merge write through, the shares CI jobs grade, the
    # grade and plan commands.
    ("roster.roster",),
    ("roster.gradebook",),
    ("roster.grade",),
    ("roster.matrix",),
    ("roster.reports",),
    ("roster.merge",),
    ("roster.shards",),
    ("roster.command", "roster.plan"),
    ("plugin", "cli"),
    ("__main__",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
# Modules outside the core that a core module may name: the registry discovers the protocol packages.
OUTSIDE = {"registry": ("protocols",)}


def core_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts
        if parts[0] == "protocols" or parts[-1] == "__init__":
            continue
        names.append(".".join(parts))
    return names


def imported(tree: ast.AST) -> set[str]:
    """Every ``conformance.X`` this module imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"relative import at line {node.lineno}: write conformance.X")
            base = node.module or ""
            # ``from conformance import registry`` imports the module conformance.registry.
            modules = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}".removeprefix("conformance.") in LEVEL else base
                for alias in node.names
            ]
        else:
            continue
        for module in modules:
            if module == "conformance" or not module.startswith("conformance."):
                continue
            name = module.removeprefix("conformance.")
            found.add(name)
    return found


def test_every_core_module_has_a_layer() -> None:
    assert sorted(set(core_modules()) - set(LEVEL)) == []


@pytest.mark.parametrize("module", core_modules())
def test_imports_only_from_lower_layers(module: str) -> None:
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    own = LEVEL[module]
    upward = []
    for name in sorted(imported(ast.parse(path.read_text(), str(path)))):
        if name.split(".")[0] in OUTSIDE.get(module, ()):
            continue
        level = LEVEL.get(name)
        if level is None or level >= own:
            upward.append(name)
    assert upward == [], f"conformance.{module} (layer {own}) imports from its own layer or above: {upward}"
