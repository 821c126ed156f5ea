"""The package stays legible: short functions, small modules, documented public API (developer guide).

The test reads every module of `landscape/` with `ast` (nothing is imported) and fails on
- a function or method (nested ones included) with more than `MAX_FUNCTION_LINES` lines, counted from its
  `def` to its last line without its docstring, so that documenting a function never lengthens it;
- a module with more than `MAX_MODULE_LINES` lines (the guide's ~400), counted raw: docstrings, comments and
  blank lines included, as a reader meets them;
- a public module-level function or class, or a public method of a public class, without a docstring
  (public: the name has no leading underscore; `__init__` is documented by its class);
- such a function or method whose docstring has no `Args:` section although it takes parameters besides
  `self` / `cls` (Google style, the project's one convention).

`ALLOWED` lists the exceptions, each with its reason; it is meant to stay empty.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "landscape"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400

# "path relative to landscape/[:qualified name]": why it may break the rule
ALLOWED: dict[str, str] = {}

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _key(path: Path, name: str | None = None) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return f"{rel}:{name}" if name else rel


def _docstring_lines(node: ast.AST) -> int:
    """The lines of `node`'s own docstring (0 without one)."""
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in ("self", "cls")]


def _qualified_functions(tree: ast.Module):
    """(qualified name, node) of every function and method, nested ones included."""
    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (*FUNCTIONS, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if isinstance(child, FUNCTIONS):
                    yield name, child
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def _public_definitions(tree: ast.Module):
    """(qualified name, node) of the public module-level functions/classes and the public methods of those classes."""
    for node in tree.body:
        if isinstance(node, (*FUNCTIONS, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for method in node.body:
                    if isinstance(method, FUNCTIONS) and not method.name.startswith("_"):
                        yield f"{node.name}.{method.name}", method


def long_functions() -> list[str]:
    out = []
    for path in _modules():
        for name, node in _qualified_functions(ast.parse(path.read_text(), str(path))):
            lines = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{_key(path, name)} ({lines} lines)")
    return out


def module_lines(source: str) -> int:
    """The raw lines of a module (docstrings, comments and blank lines included)."""
    return len(source.splitlines())


def long_modules() -> list[str]:
    return [f"{_key(p)} ({n} lines)" for p in _modules()
            if (n := module_lines(p.read_text())) > MAX_MODULE_LINES]


def undocumented() -> list[str]:
    out = []
    for path in _modules():
        for name, node in _public_definitions(ast.parse(path.read_text(), str(path))):
            if not ast.get_docstring(node):
                out.append(_key(path, name))
    return out


def without_args_section() -> list[str]:
    out = []
    for path in _modules():
        for name, node in _public_definitions(ast.parse(path.read_text(), str(path))):
            doc = ast.get_docstring(node)
            if isinstance(node, FUNCTIONS) and doc and _parameters(node) and "Args:" not in doc:
                out.append(_key(path, name))
    return out


def _unexplained(found: list[str]) -> list[str]:
    return [f for f in found if f.split(" (")[0] not in ALLOWED]


@pytest.mark.parametrize("check", [long_functions, long_modules, undocumented, without_args_section],
                         ids=lambda f: f.__name__)
def test_the_package_has_the_declared_shape(check):
    bad = _unexplained(check())
    assert not bad, f"{check.__name__}: {len(bad)}\n" + "\n".join(bad)


def test_every_allowance_is_still_needed():
    found = {f.split(" (")[0] for check in (long_functions, long_modules, undocumented, without_args_section)
             for f in check()}
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"remove from ALLOWED, they now comply: {stale}"


def test_the_checks_catch_what_they_claim(tmp_path):
    source = '''
def documented(x):
    """Sum.

    Args:
        x: a number.
    """
    return x

def no_args_section(x):
    """Sum."""
    return x

def nothing(x):
    return x

class Public:
    def method(self):
        return 1

    def _private(self, y):
        return y

def long():
''' + "    a = 1\n" * (MAX_FUNCTION_LINES + 1)
    tree = ast.parse(source)
    public = dict(_public_definitions(tree))
    assert set(public) == {"documented", "no_args_section", "nothing", "Public", "Public.method", "long"}
    assert _parameters(public["documented"]) == ["x"] and _parameters(public["Public.method"]) == []
    assert "Args:" in ast.get_docstring(public["documented"])
    assert "Args:" not in ast.get_docstring(public["no_args_section"])
    assert ast.get_docstring(public["nothing"]) is None
    node = public["long"]
    assert node.end_lineno - node.lineno + 1 - _docstring_lines(node) == MAX_FUNCTION_LINES + 2
    assert _docstring_lines(public["documented"]) == 5
    nested = dict(_qualified_functions(ast.parse("class A:\n    def f(self):\n        def g():\n            pass\n")))
    assert set(nested) == {"A.f", "A.f.g"}
    module = '"""Module.\n\nMore.\n"""\n\nclass A:\n    """A."""\n\n    x = 1\n'
    assert module_lines(module) == 9
    assert module_lines(module + "\n" * (MAX_MODULE_LINES - 9) + "y = 2\n") == MAX_MODULE_LINES + 1
