"""The package is cut into layers whose imports point one way: down (docs/architecture.md).

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lakelet"

# Bottom to top. "api" is the package itself (lakelet/__init__.py): the public names.
LAYERS = [
    "core",
    "storage",
    "catalog",
    "remote",
    "secrets",
    "lake",
    "datasets",
    "facade",
    "stages",
    "runner",
    "fs",
    "api",
    "ui",
    "cli",
]
EDGE = {"ui", "cli"}  # live on the public API only


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":  # `python -m lakelet`: the CLI
        return "cli"
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it in one of {LAYERS}")
    return parts[1]


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported lakelet module) for every import in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from lakelet.x import _y` may name a module: count it as one
            found += [
                (node.lineno, f"{target}.{a.name}") for a in node.names if f"{target}.{a.name}" in MODULES
            ]
    return [(line, name) for line, name in found if name == "lakelet" or name.startswith("lakelet.")]


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_point_down() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for module, path in MODULES.items():
        here = _layer(module)
        for line, target in _imports(module, path):
            if rank[_layer(target)] > rank[here]:
                upward.append(
                    f"{path.relative_to(PACKAGE)}:{line} ({here}) imports {target} ({_layer(target)})"
                )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_cycle_between_layers() -> None:
    graph: dict[str, set[str]] = {layer: set() for layer in LAYERS}
    for module, path in MODULES.items():
        for _, target in _imports(module, path):
            if _layer(target) != _layer(module):
                graph[_layer(module)].add(_layer(target))
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            pytest.fail("cycle between layers: " + " -> ".join([*trail, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        state[node] = 2

    for layer in LAYERS:
        visit(layer, [])


@pytest.mark.parametrize("edge", sorted(EDGE))
def test_cli_and_ui_use_only_the_public_api(edge: str) -> None:
    private = []
    for module, path in MODULES.items():
        if _layer(module) != edge:
            continue
        for line, target in _imports(module, path):
            if target.startswith(f"lakelet.{edge}"):
                continue  # its own modules
            if any(part.startswith("_") for part in target.split(".")):
                private.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not private, f"{edge}/ reaches past the public API:\n" + "\n".join(private)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A function-level import and one under TYPE_CHECKING are found, relative ones resolved."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..facade._lake import Lake\n"
        "def f():\n    from . import _objects\n    import lakelet.runner._run\n"
    )
    found = {name for _, name in _imports("lakelet.storage._x", source)}
    assert {"lakelet.facade._lake", "lakelet.storage", "lakelet.runner._run"} <= found


def test_every_module_says_what_it_exports() -> None:
    missing = [
        str(path.relative_to(PACKAGE))
        for path in MODULES.values()
        if not any(
            isinstance(node, ast.Assign | ast.AnnAssign)
            and "__all__"
            in {
                getattr(t, "id", None) for t in getattr(node, "targets", []) + [getattr(node, "target", None)]
            }
            for node in ast.parse(path.read_text()).body
        )
    ]
    assert not missing, "modules without __all__: " + ", ".join(missing)
