"""The package layout keeps its arrows (STYLE.md): api → core → pool/upstream, never back.

A front door is a request parser plus an encoder over the one core; if the core imported a door,
a second door would inherit the first one's wire. Read from the source (ast), so a lazy import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genspark2api"

# layer -> layers it must never import
FORBIDDEN = {
    "core": {"api", "simulator"},
    "pool": {"api", "core", "simulator"},
    "upstream": {"api", "core", "pool", "simulator"},
    "simulator": {"api", "core", "pool", "upstream"},
}


def imported_layers(path: Path) -> set[tuple[int, str]]:
    """(line, top-level subpackage of genspark2api) of every import in one module."""
    module_parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(module_parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                if not target and node.names:
                    target = [node.names[0].name]
            elif node.module and node.module.startswith("genspark2api."):
                target = node.module.split(".")[1:]
            else:
                continue
            if target:
                found.add((node.lineno, target[0]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("genspark2api."):
                    found.add((node.lineno, alias.name.split(".")[1]))
    return found


def test_the_walk_sees_the_imports_that_exist() -> None:
    # If the walk saw nothing, the rule below would pass for any layout.
    assert "api" in {layer for _, layer in imported_layers(PACKAGE / "cli.py")}
    assert {"pool", "upstream"} <= {layer for _, layer in imported_layers(PACKAGE / "core" / "chat.py")}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_back_up(layer: str) -> None:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, target in imported_layers(path):
            if target in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not bad, "\n".join(bad)
