"""README.md's Python code runs: every ```python block is executed in order in one namespace, so the
tour a new user copies can never crash again (it once failed on its sixth line)."""

import re
from pathlib import Path

import matplotlib
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_a_python_tour():
    blocks = python_blocks(README.read_text())
    assert blocks and "import landscape" in blocks[0]


def test_readme_python_blocks_run(tmp_path, monkeypatch, shared_cache):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)            # anything the tour writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks(README.read_text())):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - report which block broke, with the original error
            pytest.fail(f"README.md python block {i + 1} raised {type(e).__name__}: {e}")
