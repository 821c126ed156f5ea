"""The package imports one way: foundation ← engines ← orchestration, with no cycle (docs/architecture).

The test parses every module's imports with `ast` (top-level and function-level alike: a lazy import is
still a dependency) and fails on any edge that points up a layer, on an engine importing plots or plots
importing an engine, and on any import cycle between modules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "landscape"

FOUNDATION = ("landscape", "landscape.errors", "landscape.io", "landscape.cli", "landscape.modes",
              "landscape.stats", "landscape.distributed", "landscape.data", "landscape.checkpoint",
              "landscape.models")
ENGINES = ("landscape.hessian", "landscape.probes", "landscape.surface", "landscape.plots", "landscape.compat")
ORCHESTRATION = ("landscape.train", "landscape.experiment", "landscape.quickstart")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_cli(name: str) -> bool:
    return name.endswith("__main__") or name.rsplit(".", 1)[-1].startswith("cli")


def layer(name: str) -> int:
    """0 foundation, 1 engine, 2 orchestration (every CLI module counts as orchestration)."""
    if name == "landscape":
        return -1  # the package root re-exports lazily; it is checked on its own below
    if _is_cli(name) and name != "landscape.cli" or name.startswith(ORCHESTRATION):
        return 2
    if name.startswith(ENGINES):
        return 1
    if name.startswith(FOUNDATION):
        return 0
    raise AssertionError(f"{name} is in no layer: add it to tests/test_layers.py")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if _is_package(module) else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _known(target: str, names: set[str]) -> str | None:
    """The landscape module a dotted import resolves to (the longest known prefix)."""
    while target:
        if target in names:
            return target
        target = target.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue  # `if TYPE_CHECKING:` imports are for annotations and never run
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                hit = _known(t, set(files))
                if hit and hit != name and t.startswith("landscape"):
                    edges.add(hit)
        graph[name] = edges
    return graph


GRAPH = import_graph()


def test_the_graph_sees_the_known_modules():
    assert {"landscape.errors", "landscape.hessian.operator", "landscape.probes.hooks"} <= set(GRAPH)
    assert "landscape.errors" in GRAPH["landscape.checkpoint"]


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "landscape"))
def test_no_import_points_up_a_layer(module):
    up = sorted(t for t in GRAPH[module] if t != "landscape" and layer(t) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports from a higher layer: {up}"


def test_plots_import_no_engine_and_no_engine_imports_plots():
    for module, targets in GRAPH.items():
        if module.startswith("landscape.plots"):
            assert not [t for t in targets if layer(t) == 1 and not t.startswith("landscape.plots")], module
        elif layer(module) == 1:
            assert not [t for t in targets if t.startswith("landscape.plots")], module


def test_hessian_never_imports_probes_or_surface():
    for module, targets in GRAPH.items():
        if module.startswith("landscape.hessian") and layer(module) == 1:
            assert not [t for t in targets if t.startswith(("landscape.probes", "landscape.surface"))], module


def test_no_import_cycle():
    graph = {m: {t for t in ts if t != "landscape"} for m, ts in GRAPH.items() if m != "landscape"}
    # a package's __init__ importing its own submodules is the package assembling itself, not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not (_is_package(m) and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_catches_an_upward_edge_and_a_cycle():
    assert layer("landscape.probes.training") == 1 and layer("landscape.train.loop") == 2
    assert layer("landscape.hessian.__main__") == 2 and layer("landscape.cli") == 0
    node = ast.parse("from ..train import loop").body[0]
    assert _resolve("landscape.probes.training", node) == "landscape.train"
