"""The package's shape: few top-level modules, sub-packages in layers that import only downwards, no import cycle.

The import graph is read from the source (every import statement, those inside functions too), so a lazy import
cannot hide a dependency that points the wrong way."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import lit_hpcm

PACKAGE = Path(lit_hpcm.__file__).parent
CALLBACKS = Path(__file__).resolve().parents[1] / "callbacks"  # installed as lit_hpcm.callbacks

# Lower layers never import higher ones; a sub-package may import its own layer's others only where listed here.
LAYERS = [
    {"lit_hpcm", "lit_hpcm.errors", "lit_hpcm.files"},
    {"lit_hpcm.models"},
    {"lit_hpcm.data", "lit_hpcm.optim"},
    {"lit_hpcm.codec"},
    {"lit_hpcm.evaluation", "lit_hpcm.loggers"},
    {"lit_hpcm.training", "lit_hpcm.sweeps"},
    {"lit_hpcm.callbacks"},
    {"lit_hpcm.cli"},
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    found = {}
    for root, prefix in ((PACKAGE, "lit_hpcm"), (CALLBACKS, "lit_hpcm.callbacks")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if root == PACKAGE and parts[:1] == ["callbacks"]:
                continue
            found[".".join([prefix, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The lit_hpcm modules `name` imports (resolved to modules: `from pkg import name` counts as pkg.name if
    that is a module, else pkg)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                bases = [".".join(base + ([node.module] if node.module else []))]
            else:
                bases = [node.module]
            names = [alias.name for alias in node.names]
        else:
            continue
        for base in bases:
            if not base.startswith("lit_hpcm"):
                continue
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            targets |= set(subs) or {base}
    return {t for t in targets if t in modules and t != name}


def _unit(module: str) -> str:
    """The layer unit of a module: its sub-package of lit_hpcm, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_package_top_level_has_at_most_six_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_every_subpackage_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert units <= set(LAYER_OF), sorted(units - set(LAYER_OF))


def test_imports_only_point_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                    if LAYER_OF[_unit(b)] > LAYER_OF[_unit(a)])
    assert upward == []


def test_no_import_cycle_between_modules_or_subpackages():
    graph = _graph()
    units = defaultdict(set)
    for a, targets in graph.items():
        units[_unit(a)] |= {_unit(b) for b in targets if _unit(b) != _unit(a)}
    for edges in (graph, units):
        assert _cycle(edges) is None


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
