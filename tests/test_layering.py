"""The package's one-way layering: no import circle, each module imports only its own layer or lower ones,
and no module over 500 lines. Every import counts: top level, inside functions and under TYPE_CHECKING,
and importing `a.b.c` also runs the packages `a` and `a.b` (their __init__ imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agmc_onnx", "converters")
MAX_LINES = 500

# Lowest first; a module belongs to the layer of its longest listed prefix. docs/design.md draws this.
LAYERS: list[tuple[str, ...]] = [
    ("agmc_onnx", "agmc_onnx.errors", "agmc_onnx.protos", "agmc_onnx.io", "agmc_onnx.runtime", "agmc_onnx.budget",
     "agmc_onnx.inputs"),
    ("agmc_onnx.modelfile", "agmc_onnx.shapes", "agmc_onnx.model", "agmc_onnx.shapefold", "agmc_onnx.data",
     "converters", "agmc_onnx.bench"),
    ("agmc_onnx.ops",),
    ("agmc_onnx.groups",),
    ("agmc_onnx.cost",),
    ("agmc_onnx.analysis",),
    ("agmc_onnx.importance", "agmc_onnx.plan"),
    ("agmc_onnx.surgery", "agmc_onnx.encoder"),
    ("agmc_onnx.devices", "agmc_onnx.fidelity", "agmc_onnx.evaluate", "agmc_onnx.bn", "agmc_onnx.latency"),
    ("agmc_onnx.rl",),
    ("agmc_onnx.strategies",),
    ("agmc_onnx.report", "agmc_onnx.report_search", "agmc_onnx.distill", "agmc_onnx.feature_distill",
     "agmc_onnx.finetune"),
    ("agmc_onnx.workflows",),
    ("agmc_onnx.api",),
    ("agmc_onnx.commands", "agmc_onnx.cli"),
]


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> list[str]:
    """The project modules an import of `name` runs: the longest existing prefix and its parent packages."""
    parts = name.split(".")
    hit = None
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules:
            hit = k
            break
    if hit is None:
        return []
    return [".".join(parts[:k]) for k in range(1, hit + 1) if ".".join(parts[:k]) in modules]


def import_graph() -> nx.DiGraph:
    """Edges importer -> imported over every import statement of the project's modules."""
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                for dep in _resolve(t, modules):
                    if dep != name and not name.startswith(dep + "."):  # a module's own packages run first anyway
                        g.add_edge(name, dep)
    return g


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix names `module`."""
    best, rank = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def test_no_import_circle() -> None:
    """The import graph of the project's modules is acyclic."""
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, f"import circles: {cycles}"


def test_every_module_has_a_layer() -> None:
    """Each module is placed in the layer table (a new module must be placed deliberately)."""
    missing = [m for m in _modules() if layer_of(m) < 0]
    assert not missing, f"modules missing from LAYERS: {missing}"


def test_imports_go_down() -> None:
    """A module imports only modules of its own layer or of lower layers."""
    up = [(a, b) for a, b in import_graph().edges if layer_of(b) > layer_of(a)]
    assert not up, "imports up the layering: " + ", ".join(f"{a} -> {b}" for a, b in up)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module: str) -> None:
    """No module of the package over 500 lines."""
    lines = _modules()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


def test_the_checker_sees_function_level_and_package_imports(tmp_path: Path) -> None:
    """The graph counts imports inside functions and the package __init__ an import runs."""
    g = import_graph()
    assert g.has_edge("agmc_onnx.cli", "agmc_onnx.commands")
    mods = _modules()
    assert _resolve("agmc_onnx.strategies.base", mods) == ["agmc_onnx", "agmc_onnx.strategies", "agmc_onnx.strategies.base"]
