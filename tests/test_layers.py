"""The package imports one way: foundation ← engines ← orchestration, with no cycle (README, Layout).

The test parses every module's imports with `ast` (top-level, function-level and `if TYPE_CHECKING:` alike: a
lazy or annotation-only import is still a dependency) and fails on any edge that points up a layer, on an
engine importing plots or plots importing an engine, on an import of another package's underscore module, and
on any import cycle between files.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "landscape"

# Every module's role, declared: the longest matching prefix decides (0 foundation, 1 engine,
# 2 orchestration). A module that matches no entry fails, so a new package is placed here on purpose.
ROLES = {
    "landscape.errors": 0, "landscape.io": 0, "landscape.cli": 0, "landscape.modes": 0, "landscape.stats": 0,
    "landscape.distributed": 0, "landscape.data": 0, "landscape.datasets": 0, "landscape.checkpoint": 0,
    "landscape.models": 0, "landscape.lm_inputs": 0,
    "landscape.memory": 0, "landscape.inputs": 0, "landscape.objective": 0, "landscape.text": 0,
    "landscape.hessian": 1, "landscape.probes": 1, "landscape.surface": 1, "landscape.plots": 1,
    "landscape.compat": 1,
    "landscape.hessian.cli": 2, "landscape.hessian.__main__": 2, "landscape.surface.__main__": 2,
    "landscape.surface.cli": 2,
    "landscape.train": 2, "landscape.experiment": 2, "landscape.quickstart": 2,
}


def layer(name: str) -> int:
    """The declared role of `name` (the longest prefix in ROLES); -1 for the package root."""
    if name == "landscape":
        return -1  # the package root re-exports lazily; it is checked on its own below
    prefixes = [p for p in ROLES if name == p or name.startswith(p + ".")]
    if not prefixes:
        raise AssertionError(f"{name} has no declared role: add it to ROLES in tests/test_layers.py")
    return ROLES[max(prefixes, key=len)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if _is_package(module) else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(target: str, names: set[str]) -> str | None:
    """The landscape module a dotted import resolves to (the longest known prefix)."""
    while target:
        if target in names:
            return target
        target = target.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """{module: the landscape modules it imports}, every import statement counted."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
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


def _package(module: str) -> str:
    return module if _is_package(module) else module.rpartition(".")[0]


def test_the_graph_sees_the_known_modules():
    assert {"landscape.errors", "landscape.hessian.operators.operator", "landscape.probes.hooks"} <= set(GRAPH)
    assert "landscape.errors" in GRAPH["landscape.checkpoint"]


def test_every_module_has_a_declared_role():
    missing = [m for m in GRAPH if m != "landscape" and not any(m == p or m.startswith(p + ".") for p in ROLES)]
    assert not missing, f"modules without a role in ROLES: {missing}"


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


def test_no_import_of_another_packages_underscore_module():
    bad = []
    for module, targets in GRAPH.items():
        for t in targets:
            private = t.rsplit(".", 1)[-1].startswith("_") and not t.endswith("__main__")
            if private and _package(t) != _package(module):
                bad.append(f"{module} -> {t}")
    assert not bad, bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between files (a package's __init__ assembling its own submodules excepted), or None."""
    graph = {m: {t for t in ts if t != "landscape" and not (_is_package(m) and t.startswith(m + "."))}
             for m, ts in graph.items() if m != "landscape"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_catches_an_upward_edge_a_cycle_and_an_undeclared_module():
    assert layer("landscape.probes.training") == 1 and layer("landscape.train.loop") == 2
    assert layer("landscape.hessian.__main__") == 2 and layer("landscape.cli") == 0
    assert layer("landscape.hessian.cli.state") == 2 and layer("landscape.hessian.operators.plan") == 1
    with pytest.raises(AssertionError, match="no declared role"):
        layer("landscape.newpackage.thing")
    node = ast.parse("from ..train import loop").body[0]
    assert _resolve("landscape.probes.training", node) == "landscape.train"
    assert find_cycle({"landscape.a": {"landscape.b"}, "landscape.b": {"landscape.a"}}) == [
        "landscape.a", "landscape.b", "landscape.a"]
    assert find_cycle({"landscape.a": {"landscape.b"}, "landscape.b": set()}) is None
