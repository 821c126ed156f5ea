"""Every notebook runs top to bottom in smoke mode (LANDSCAPE_SMOKE=1: a toy-size grid into a temp dir) under
nbclient with the `python3` kernel and the repository root as working directory; an error in any cell fails.
The committed notebooks carry no outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell; a smoke grid takes ~10-20 s on 2 cores


def test_the_paper_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {"00_quickstart", "orhan2018", "oh2025", "zaeemzadeh2018", "liu2020"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "SMOKE = os.environ.get(\"LANDSCAPE_SMOKE\") == \"1\"" in first_code.source


def test_notebooks_share_no_copied_helpers():
    """Helpers live in landscape.experiment.results: no function is defined in two notebooks, and the paper
    notebooks (those with a grid in experiments/) open their grid through it."""
    import ast

    defined: dict[str, list[str]] = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, []).append(path.stem)
        if (ROOT / "experiments" / f"{path.stem}.toml").exists():  # a paper grid's notebook
            assert "open_grid(" in code, f"{path.name} does not open its grid with the results module"
    copied = {name: where for name, where in defined.items() if len(where) > 1}
    assert not copied, f"helpers defined in several notebooks (move them to the results module): {copied}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_in_smoke_mode(path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_SMOKE", "1")
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path_factory.getbasetemp() / "notebook-cache"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    own = f"{path.stem}_*"  # this notebook's committed figures (other tools write figures/ too)
    figures = sorted((ROOT / "figures").glob(own))
    stamps = [p.stat().st_mtime_ns for p in figures]
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    # smoke mode never writes into the committed figures
    assert sorted((ROOT / "figures").glob(own)) == figures
    assert [p.stat().st_mtime_ns for p in figures] == stamps
