"""landscape.experiment.records / store / report: a finished tiny grid's compact records give back every
result key of its run files (re-derived, to the records' 6 significant digits), the probe tables keep order
and non-finite values, and the report replaces only generated blocks and finds result numbers outside them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from landscape import experiment
from landscape.cli import run_cli
from landscape.errors import LandscapeError
from landscape.experiment import records, report
from landscape.experiment.registry import GridSpec, grids, tables

TINY = """
name = "tiny"
notes = ["[TD] a test grid"]

[cells.plain]
model_config = { kind = "plain" }

[cells.res]
model_config = { kind = "residual" }

[profiles.quick]
seeds = [0, 1]
device = "cpu"
threads = 1
target_acc = 0.0
model_config = { depth = 3, width = 6 }
train = { n_samples = 160, epochs = 2, batch_size = 40 }

[profiles.quick.measure]
probe_samples = 64
batch_size = 32
probes = { epochs = "all" }
spectrum = { epochs = ["init", "last"], iters = 6, vectors = 2 }
exact = { epochs = ["last"], n_samples = 48 }
steps = { every = 3, metrics = ["stream", "grad_norm"] }

[claims.res_beats_plain]
text = "res trains better"
metric = "train_acc"
cells = ["res", "plain"]
direction = "greater"
"""

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    (root / "experiments").mkdir()
    config = root / "experiments" / "tiny.toml"
    config.write_text(TINY)
    out = root / "runs" / "tiny"
    assert run_cli(experiment.main, [str(config), "--out", str(out), "--no-progress"]) == 0
    assert records.extract_grid(out, root / "records" / "tiny") == 4
    return root


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and not (math.isfinite(a) and math.isfinite(b)):
        return math.isnan(a) and math.isnan(b) or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-4 * max(1.0, abs(a))  # 5 significant digits in the probe tables
    return a == b


def test_records_give_back_every_result_key(tiny_grid):
    out = tiny_grid / "runs" / "tiny"
    grid = records.GridRecords(tiny_grid / "records" / "tiny")
    assert [(r["config"]["cell"], r["config"]["seed"]) for r in grid.runs] == [("plain", 0), ("plain", 1),
                                                                               ("res", 0), ("res", 1)]
    for rec, res in zip(grid.runs, grid.results()):
        old = json.loads((out / res["cell"] / f"seed{res['seed']}" / "result.json").read_text())
        for part in ("final", "init"):
            assert set(old[part]) == set(res[part])
            bad = {k: (v, res[part][k]) for k, v in old[part].items()
                   if not close(math.nan if v is None else v, math.nan if res[part][k] is None else res[part][k])}
            assert not bad
        # the probe tables give back the run's records in their order
        rows = [json.loads(s) for s in (out / res["cell"] / f"seed{res['seed']}" / "epoch_probes.jsonl")
                .read_text().splitlines()]
        back = records.epoch_records(rec)
        assert [(r["epoch"], r["block"], r["metric"]) for r in back] == [(r["epoch"], r["block"], r["metric"])
                                                                          for r in rows]
        assert all(close(a["value"], b["value"]) for a, b in zip(back, rows))
        assert records.history(rec)[-1]["epoch"] == 2
        assert records.spectrum(rec)["epoch"] == 2 and records.step_records(rec)
    plain0 = grid.run("plain", 0)
    eig = records.exact_eigenvalues(plain0)
    with np.load(out / "plain" / "seed0" / "measure" / "epoch002.npz") as f:
        np.testing.assert_allclose(eig, f["exact_eigenvalues"], rtol=1e-4, atol=1e-12)
    # the summary from the records is the runner's, and the seeds can be restricted
    runner = json.loads((out / "summary.json").read_text())
    mine = grid.summary()
    assert close(mine["cells"][1]["final"]["train_acc"]["mean"], runner["cells"][1]["final"]["train_acc"]["mean"])
    assert grid.summary(seeds=[1])["cells"][0]["seeds"] == [1]
    size = sum(p.stat().st_size for p in (tiny_grid / "records").rglob("*.json"))
    assert size < 4 * 30_000  # compact: no checkpoint, no per-record dicts


def test_probe_table_keeps_nonfinite_values_and_absences():
    rows = [{"step": 10, "block": "b0", "metric": "grad_ratio", "value": 1.0},
            {"step": 10, "block": "b1", "metric": "grad_ratio", "value": None},  # the run files' non-finite value
            {"step": 20, "block": "b1", "metric": "grad_ratio", "value": float("inf")},
            {"step": 20, "block": "b1", "metric": "x_norm2", "value": 2.0}]
    table = records.compact(records.probe_table(rows))
    assert table["values"]["grad_ratio"] == [[1.0, "nan"], [None, "inf"]]
    back = records.table_records(json.loads(json.dumps(table)))
    assert [(r["step"], r["block"], r["metric"]) for r in back] == [(10, "b0", "grad_ratio"), (10, "b1", "grad_ratio"),
                                                                     (20, "b1", "grad_ratio"), (20, "b1", "x_norm2")]
    assert math.isnan(back[1]["value"]) and back[2]["value"] == math.inf
    assert records.compact(1.234567891) == 1.23457 and records.compact([np.float32(2.5), -math.inf]) == [2.5, "-inf"]


def test_bad_records_fail_clearly(tmp_path):
    with pytest.raises(LandscapeError, match="no records"):
        records.GridRecords(tmp_path)
    with pytest.raises(LandscapeError, match="not a finished run"):
        records.extract_run(tmp_path)
    (tmp_path / "r.json").write_text('{"version": 0}')
    with pytest.raises(LandscapeError, match="record version"):
        records.read_record(tmp_path / "r.json")


def test_report_replaces_only_generated_blocks_and_finds_stray_numbers():
    text = ("# R\n\nProse with lr 0.05 and a typed result 0.902.\n\n<!-- generated: a -->\nold 0.5\n<!-- end: a -->\n"
            "more `code 1.23` prose\n")
    assert report.blocks(text) == {"a": "old 0.5\n"}
    new = report.substitute(text, {"a": "new 0.77\n"})
    assert "new 0.77\n<!-- end: a -->" in new and "Prose with lr 0.05" in new
    assert report.stray_numbers(new, {"0.05"}) == ["line 3: 0.902"]
    with pytest.raises(LandscapeError, match="without a block"):
        report.check_blocks(text, {"a": None, "b": None}, pending={})
    report.check_blocks(text, {"a": None}, pending={})
    typed = text + "<!-- pending: li -->\ntyped 0.77\n<!-- end: li -->\n"
    with pytest.raises(LandscapeError, match="pending"):
        report.check_blocks(typed, {"a": None}, pending={})  # an undeclared typed section fails
    report.check_blocks(typed, {"a": None}, pending={"li": "the work that replaces it"})
    assert report.stray_numbers(typed, {"0.05"}) == ["line 3: 0.902"]  # a declared typed section is skipped
    with pytest.raises(LandscapeError, match="twice"):
        report.blocks(text + text)


def test_registry_lists_each_grid_once_with_its_records_directory():
    specs = grids()
    assert len(specs) == len(set(specs))
    assert GridSpec("orhan2018", "confirm").dir == "orhan2018-confirm" and GridSpec("oh2025").spec == "oh2025"
    assert all(callable(f) for f in tables().values())


def test_shipped_results_are_what_the_records_give():
    """RESULTS.md's generated blocks equal what the committed records give, and its prose has no result number."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "records").is_dir():
        pytest.skip("no committed records")
    assert report.main(["--check", "--no-figures"]) == 0


def test_the_old_verdicts_are_reproduced_from_the_same_runs():
    """Each claim's `previous` verdict (what RESULTS.md said at 6538b41) is what the old rule gives on the
    re-run records: the re-runs reproduce the old runs, so "Verdicts that changed" compares like with like."""
    from landscape.experiment.store import Store

    root = Path(__file__).resolve().parents[1]
    if not (root / "records").is_dir():
        pytest.skip("no committed records")
    rows = [r for r in Store().verdicts if r["previous"]]
    assert rows
    wrong = {r["name"]: (r["previous"]["verdict"], r["previous"]["test"]["verdict"]) for r in rows
             if r["previous"]["verdict"] != r["previous"]["test"]["verdict"]}
    assert not wrong
