"""Every notebook runs top to bottom in smoke mode (LANDSCAPE_SMOKE=1: figures into a temp dir; a notebook that
runs a grid runs a toy-size one) under nbclient with the `python3` kernel and the repository root as working
directory; an error in any cell fails. A notebook that reads the committed records (`Store()`) is committed with
its outputs, so it shows what RESULTS.md shows; the others carry none."""

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
def test_notebook_is_valid_and_its_outputs_are_committed_where_it_reads_records(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    reads_records = any("Store()" in c.source for c in nb.cells if c.cell_type == "code")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if reads_records:  # executed top to bottom, no error
            assert cell.execution_count is not None, f"{path.name}: a cell was not executed"
            assert not any(o.output_type == "error" for o in cell.outputs), f"{path.name} has an error output"
        else:
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"
    if reads_records:
        counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
        assert counts == list(range(1, len(counts) + 1)), f"{path.name} was not run top to bottom in one go"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "SMOKE = os.environ.get(\"LANDSCAPE_SMOKE\") == \"1\"" in first_code.source


def test_notebooks_share_no_copied_helpers():
    """Helpers live in the library: no function is defined in two notebooks, and the paper notebooks (those with
    a grid in experiments/) read the committed records through landscape.experiment.store.Store."""
    import ast

    defined: dict[str, list[str]] = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, []).append(path.stem)
        if (ROOT / "experiments" / f"{path.stem}.toml").exists():  # a paper grid's notebook
            assert "Store()" in code, f"{path.name} does not read the records through Store"
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
