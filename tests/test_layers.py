"""The layers import only downwards, and no module imports in a cycle.

Every ``.py`` file of the project is parsed (nothing is imported) and each
``import``/``from ... import`` statement is collected, including imports inside
functions; imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "cache", "models", "analysis", "dashboard", "benchmarks")

# What each layer may not import (a prefix of a dotted module name).
FORBIDDEN = {
    "core": ("models", "analysis", "dashboard", "benchmarks", "cache.store", "cache.index",
             "cache.keys"),
    "cache": ("core", "models", "analysis", "dashboard", "benchmarks"),
    "models": ("analysis", "dashboard", "benchmarks"),
    "analysis": ("dashboard", "dash", "plotly", "benchmarks"),
    "dashboard": ("benchmarks",),
    "dashboard.figures": ("analysis", "models", "cache", "dashboard.state", "dashboard.views"),
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str) -> set[str]:
    found: set[str] = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # ``from pkg import module`` imports the module when it is one.
            found.update(f"{name}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def project_imports() -> dict[str, set[str]]:
    """Module name -> the project modules it imports."""
    modules: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    graph = {}
    for name, path in modules.items():
        key = f"{name}.__init__" if path.name == "__init__.py" else name
        raw = _imports(ast.parse(path.read_text(), str(path)), key)
        graph[name] = {m for m in raw if m in modules and m != name}
    return graph


GRAPH = project_imports()


# The two benchmark entry points the README names (``python -m analysis bench``,
# ``python -m dashboard.bench``) hand over to the benchmarks package.
ENTRY_POINTS = {"analysis.cli", "dashboard.bench"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(layer):
    bad = []
    for module, imported in sorted(GRAPH.items()):
        if module != layer and not module.startswith(layer + "."):
            continue
        if module in ENTRY_POINTS:
            imported = {m for m in imported if not m.startswith("benchmarks")}
        for name in sorted(imported):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(bad)


def test_analysis_imports_no_dash_at_all():
    # Third-party names are outside GRAPH: read them straight from the sources.
    bad = []
    for path in (ROOT / "analysis").rglob("*.py"):
        names = _imports(ast.parse(path.read_text()), "analysis.x")
        bad += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                if n.split(".")[0] in ("dash", "plotly", "dash_ag_grid")]
    assert not bad, "\n".join(bad)


def test_no_module_imports_in_a_cycle():
    import networkx as nx

    g = nx.DiGraph()
    for module, imported in GRAPH.items():
        g.add_node(module)
        # A package's __init__ is imported by its modules implicitly: not an edge of ours.
        g.add_edges_from((module, m) for m in imported if not module.startswith(m + "."))
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1]
    assert not cycles, "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_the_graph_sees_known_edges():
    # Guards the parser itself: these imports exist, so the tests above can fail.
    assert "core.errors" in GRAPH["models.checkpoint"]
    assert "analysis.registry" in GRAPH["analysis.steps.inference"]
    assert any(m.startswith("analysis") for m in GRAPH["dashboard.state"])
