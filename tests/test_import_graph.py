"""No import cycles among the modules of the installed ``edgeq`` package.

Every import counts, wherever it is written: at module level, inside functions, under ``if TYPE_CHECKING:``.
``from pkg import name`` imports ``pkg.name`` when that is a module, else ``pkg``; relative imports are resolved.
The modules are found from where ``import edgeq`` finds the package (symbolic links followed; a subpackage mapped
elsewhere, like ``edgeq.targets`` in an editable install, is located with ``importlib``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import networkx as nx
import pytest

from edgeq.errors import EdgeqError

PACKAGE = "edgeq"


def _walk_package(name: str, folder: Path, modules: dict[str, Path]) -> None:
    """Every ``.py`` file under ``folder`` (package ``name``) as a dotted module name."""
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if (Path(root) / d / "__init__.py").is_file())
        relative = Path(root).relative_to(folder).parts
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            stem = file[:-3]
            parts = [name, *relative] + ([] if stem == "__init__" else [stem])
            modules[".".join(parts)] = Path(root) / file


def _locate(name: str, modules: dict[str, Path]) -> bool:
    """Find a module not under the package folder (e.g. mapped by an editable install) and add it (and, for a
    package, its modules); False if there is no such module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return False
    if spec.submodule_search_locations:
        _walk_package(name, Path(next(iter(spec.submodule_search_locations))), modules)
    modules[name] = Path(spec.origin)
    parent = name.rpartition(".")[0]
    if parent != PACKAGE and parent not in modules:
        _locate(parent, modules)
    return True


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The dotted names an import statement makes ``module`` depend on (before resolving to known modules); a
    module it names that is not under the package folder is located (never an attribute: nothing is imported)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith(f"{PACKAGE}.") and alias.name not in modules:
                _locate(alias.name, modules)
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[:len(package) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    if base.startswith(f"{PACKAGE}.") and base not in modules:
        _locate(base, modules)
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported dotted name belongs to (its longest known prefix), or None outside the package."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> nx.DiGraph:
    """Module → imported module, for every module of the installed package (each edge notes a line)."""
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations, f"{PACKAGE} is not an importable package"
    modules: dict[str, Path] = {}
    for folder in spec.submodule_search_locations:
        _walk_package(PACKAGE, Path(folder), modules)
    graph = nx.DiGraph()
    done: set[str] = set()
    while len(done) < len(modules):  # _locate may add modules while the graph is built
        for module, path in sorted(modules.items()):
            if module in done:
                continue
            done.add(module)
            graph.add_node(module)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                for name in _imported(node, module, path.name == "__init__.py", modules):
                    target = _resolve(name, modules)
                    if target is not None and target != module:
                        graph.add_edge(module, target, line=node.lineno)
    return graph


def cycles(graph: nx.DiGraph) -> list[str]:
    """One line per strongly connected component of more than one module: its size, members and one cycle."""
    found = []
    for component in sorted(nx.strongly_connected_components(graph), key=lambda c: (-len(c), sorted(c))):
        if len(component) < 2:
            continue
        loop = nx.find_cycle(graph.subgraph(component))
        path = "".join(f"{a} (line {graph.edges[a, b]['line']}) -> " for a, b in loop) + loop[0][0]
        found.append(f"{len(component)} modules {sorted(component)}; e.g. {path}")
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """The checker itself: function-level, TYPE_CHECKING, relative and ``from pkg import module`` imports all
    become edges (so a clean result below means something)."""
    graph = import_graph()
    assert graph.number_of_nodes() > 100
    assert graph.has_edge("edgeq.commands.export", "edgeq.export.orchestration")  # inside a function
    assert graph.has_edge("edgeq.export", "edgeq.manifest")  # only under TYPE_CHECKING
    assert graph.has_edge("edgeq", "edgeq.export")  # from edgeq import export (a module)
    assert graph.has_edge("edgeq.commands.export", "edgeq.backends")  # from edgeq.backends import resolve
    assert graph.has_edge("edgeq.measure", "edgeq.targets.runner")  # the runner package installed as edgeq.targets
    assert not graph.has_edge("edgeq.measure", "edgeq")


def test_relative_imports_resolve() -> None:
    modules = {name: Path(name) for name in ("edgeq", "edgeq.export", "edgeq.export.context", "edgeq.manifest")}
    statement = ast.parse("from .. import manifest").body[0]
    assert _imported(statement, "edgeq.export.context", False, modules) == ["edgeq.manifest"]
    statement = ast.parse("from .context import ExportContext").body[0]
    assert _imported(statement, "edgeq.export", True, modules) == ["edgeq.export.context"]
    assert _resolve("edgeq.export.context.ExportContext", modules) == "edgeq.export.context"


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles among edgeq modules:\n" + "\n".join(found)


def test_edgeq_export_is_both_the_package_and_the_python_api() -> None:
    """``edgeq.export(...)`` (README) and the ``edgeq.export`` package share a name: importing a module of the
    package must not replace the function (a module attribute), and the call must reach ``run_export``."""
    import inspect

    import edgeq
    import edgeq.export.orchestration as orchestration

    assert edgeq.export.orchestration is orchestration
    assert callable(edgeq.export)
    assert list(inspect.signature(edgeq.export.export).parameters)[:4] == ["model", "calib", "backends", "out"]
    with pytest.raises(EdgeqError, match="--max-drop needs --eval"):  # checked before any work: nothing written
        edgeq.export("missing.onnx", "missing.npz", backends=["onnx-fp32"], out="unused", max_drop=0.01)
