"""landscape.experiment: a tiny grid end to end, skipping finished runs, resuming interrupted ones,
the shipped configs, and one-line errors for bad configs."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import experiment
from landscape.checkpoint import load_checkpoint, load_training_state
from landscape.cli import run_cli
from landscape.data import load_data, measurement_set
from landscape.errors import LandscapeError
from landscape.experiment import runner
from landscape.hessian import exact_hessian
from landscape.hessian.cli.spectrum_file import read_spectrum

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("orhan2018", "oh2025", "zaeemzadeh2018", "liu2020")

TINY = """
name = "tiny"
notes = ["[TD] a test grid"]
headline = ["train_acc", "exact_degenerate_ratio", "init.grad_gain"]

[cells.plain]
label = "plain"
model_config = { kind = "plain" }

[cells.res]
label = "residual"
model_config = { kind = "residual" }

[profiles.quick]
seeds = [0]
device = "cpu"
threads = 1
target_acc = 0.0
model_config = { depth = 2, width = 6 }
train = { n_samples = 160, epochs = EPOCHS, batch_size = 40 }

[profiles.quick.measure]
probe_samples = 64
batch_size = 32
probes = { epochs = "all" }
spectrum = { epochs = ["init", "last"], iters = 6, vectors = 2 }
exact = { epochs = ["last"], n_samples = 48 }
steps = { every = 3, metrics = ["stream", "grad_norm"] }
"""


pytestmark = pytest.mark.usefixtures("private_cache")


def _config(tmp_path: Path, epochs: int = 2, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("EPOCHS", str(epochs)) + extra)
    return path


def _run(config: Path, out: Path, *more: str) -> int:
    return run_cli(experiment.main, [str(config), "--out", str(out), "--no-progress", *more])


def _lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def _head_commit(root: Path) -> str | None:
    """HEAD's commit read from the repository's files, without the git binary (the reference for the
    commit the runner records); None outside a checkout."""
    dotgit = root / ".git"
    if dotgit.is_file():  # a worktree: "gitdir: PATH"
        gitdir = (root / dotgit.read_text().split("gitdir:", 1)[1].strip()).resolve()
    elif dotgit.is_dir():
        gitdir = dotgit
    else:
        return None
    head = (gitdir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head  # detached
    ref = head[4:].strip()
    common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve() if (gitdir / "commondir").exists() \
        else gitdir
    for base in (gitdir, common):
        if (base / ref).exists():
            return (base / ref).read_text().strip()
    packed = common / "packed-refs"
    lines = packed.read_text().splitlines() if packed.exists() else []
    return next((ln.split()[0] for ln in lines if ln.endswith(" " + ref)), None)


def _drop_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_tiny_grid_writes_every_file_with_consistent_contents(tmp_path):
    out = tmp_path / "runs"
    assert _run(_config(tmp_path), out) == 0
    for name in ("experiment.json", "summary.json", "summary.md"):
        assert (out / name).exists()
    record = json.loads((out / "experiment.json").read_text())
    assert record["notes"] == ["[TD] a test grid"] and record["profile"] == "quick"
    want = _head_commit(ROOT) if shutil.which("git") else None
    assert (record["git"] or {}).get("commit") == want and (want is None) == (record["git"] is None)
    data = load_data("mnist1d", n_samples=160)
    X, y = measurement_set(data, 64)
    for cell in ("plain", "res"):
        run = out / cell / "seed0"
        for name in ("cell.json", "config.json", "metrics.jsonl", "checkpoint.pt", "ckpt_epoch000.pt",
                     "ckpt_epoch001.pt", "ckpt_epoch002.pt", "probes.jsonl", "spectrum.jsonl", "epoch_probes.jsonl",
                     "result.json", "done.json", "measure/epoch000.json", "measure/epoch000/spectrum.json",
                     "measure/epoch000/spectrum.npz", "measure/epoch002/spectrum.npz", "measure/epoch002.npz"):
            assert (run / name).exists(), f"{cell}: {name} missing"
        # the epoch-end checkpoint holds the weights train() saved after that epoch
        last = load_training_state(run / "checkpoint.pt")["model_state"]
        kept = load_training_state(run / "ckpt_epoch002.pt")["model_state"]
        assert all(torch.equal(last[k], kept[k]) for k in last)
        # exact eigenvalues are those of the checkpoint's Hessian on the fixed probe subset
        model, meta = load_checkpoint(run / "ckpt_epoch002.pt")
        H = exact_hessian(model, F.cross_entropy, [(X[:48], y[:48])])
        with np.load(run / "measure" / "epoch002.npz") as npz:
            eigs = npz["exact_eigenvalues"]
        spec = read_spectrum(run / "measure" / "epoch002")  # the one spectrum format
        assert spec["nodes"].shape == (2, 6) and spec["density"].shape == spec["grid"].shape
        assert spec["vectors"] == 2 and spec["epoch"] == 2 and spec["dim"] == eigs.size
        np.testing.assert_allclose(eigs, torch.linalg.eigvalsh(H).numpy(), rtol=1e-8, atol=1e-10)
        spectrum = _lines(run / "spectrum.jsonl")
        assert [s["epoch"] for s in spectrum] == [0, 2] and "exact" in spectrum[1] and "exact" not in spectrum[0]
        assert spectrum[1]["exact"]["n_params"] == eigs.size == sum(p.numel() for p in model.parameters())
        tol = 1e-3 * eigs.max()
        assert spectrum[1]["exact"]["degenerate_ratio"] == pytest.approx(np.mean(np.abs(eigs) < tol))
        probes = _lines(run / "epoch_probes.jsonl")
        assert sorted({r["epoch"] for r in probes}) == [0, 1, 2]
        assert {r["metric"] for r in probes} >= {"grad_ratio", "dead_frac", "eff_rank"}
        assert {r["block"] for r in probes if r["metric"] == "grad_ratio"} == {"blocks.0", "blocks.1"}
        steps = _lines(run / "probes.jsonl")
        assert sorted({r["step"] for r in steps}) == [3, 6] and steps[0]["epoch"] == 0.75
        metrics = _lines(run / "metrics.jsonl")
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "completed" and result["measured_epochs"] == [0, 1, 2]
        assert result["final"]["train_acc"] == metrics[-1]["train_acc"]
        assert result["final"]["exact_degenerate_ratio"] == spectrum[1]["exact"]["degenerate_ratio"]
        # norm preservation over the residual blocks; the 40 -> 6 input block is a transition, reported apart
        assert json.loads((run / "measure" / "epoch002.json").read_text())["transitions"] == ["blocks.0"]
        ratios = {r["block"]: r["value"] for r in probes if r["epoch"] == 2 and r["metric"] == "grad_ratio"}
        assert result["final"]["grad_ratio_max"] == pytest.approx(ratios["blocks.1"])
        assert result["final"]["grad_ratio_transition_max"] == pytest.approx(ratios["blocks.0"])
        assert result["final"]["grad_dev_max"] == pytest.approx(abs(np.log10(ratios["blocks.1"])))
        assert result["final"]["epoch_to_target"] == 1 and "slq_lambda_max" in result["init"]
        cell_json = json.loads((run / "cell.json").read_text())
        assert cell_json["train"]["model_config"]["kind"] == ("plain" if cell == "plain" else "residual")
        assert cell_json["experiment"] == "tiny" and len(cell_json["hash"]) == 16
    summary = json.loads((out / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["plain", "res"]
    row = summary["cells"][1]
    assert row["status"] == {"completed": 1} and row["final"]["train_acc"]["n"] == 1
    assert row["final"]["train_acc"]["std"] is None
    assert "| res | 1 | 1 completed |" in (out / "summary.md").read_text()


def test_finished_runs_are_skipped_and_summary_aggregates_seeds(tmp_path, monkeypatch):
    config, out = _config(tmp_path, epochs=1), tmp_path / "runs"
    assert _run(config, out, "--only", "res") == 0
    assert not (out / "plain").exists()
    config.write_text(config.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    seed0 = out / "res" / "seed0"
    before = json.loads((seed0 / "result.json").read_text())
    stamps = {name: (seed0 / name).stat().st_mtime_ns for name in ("metrics.jsonl", "measure/epoch001.json")}
    trained = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: trained.append(cfg.seed) or real_train(cfg, **kw))
    assert _run(config, out, "--only", "res") == 0
    assert trained == [1]  # seed 0 was finished and skipped
    # not trained or measured again; its result is re-derived from its files, to the same values
    assert {name: (seed0 / name).stat().st_mtime_ns for name in stamps} == stamps
    assert json.loads((seed0 / "result.json").read_text()) == before
    row = json.loads((out / "summary.json").read_text())["cells"][0]
    values = row["final"]["train_acc"]["values"]
    assert row["seeds"] == [0, 1] and row["final"]["train_acc"]["mean"] == pytest.approx(np.mean(values))
    assert row["final"]["train_acc"]["std"] == pytest.approx(np.std(values, ddof=1))


def test_unfinished_run_recomputes_only_what_is_missing(tmp_path, monkeypatch):
    config, out = _config(tmp_path, epochs=1), tmp_path / "runs"
    assert _run(config, out, "--only", "plain") == 0
    run = out / "plain" / "seed0"
    before = json.loads((run / "result.json").read_text())
    ckpt_stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    kept_stamp = (run / "measure" / "epoch000.json").stat().st_mtime_ns
    (run / "done.json").unlink()
    (run / "measure" / "epoch001.json").unlink()
    assert _run(config, out, "--only", "plain") == 0
    assert (run / "done.json").exists() and (run / "measure" / "epoch001.json").exists()
    assert (run / "checkpoint.pt").stat().st_mtime_ns == ckpt_stamp  # no epoch was retrained
    assert (run / "measure" / "epoch000.json").stat().st_mtime_ns == kept_stamp
    after = json.loads((run / "result.json").read_text())
    assert _drop_seconds([after["final"]]) == _drop_seconds([before["final"]])
    assert after["final"]["train_seconds"] == before["final"]["train_seconds"]
    # a changed config is refused instead of mixing two configurations in one run directory
    (run / "done.json").unlink()
    config.write_text(config.read_text().replace("width = 6", "width = 7"))
    assert _run(config, out, "--only", "plain") == 2


def test_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=3)
    assert _run(config, tmp_path / "straight", "--only", "res") == 0
    real_train = runner.train

    def interrupting(cfg, *, step_callbacks=(), **kw):
        def stop(step, *args):
            if step == 6:  # mid epoch 2: checkpoint.pt holds epoch 1
                signal.raise_signal(signal.SIGINT)
        return real_train(cfg, step_callbacks=[*step_callbacks, stop], **kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(runner, "train", interrupting)
    assert _run(config, out, "--only", "res") == 130
    run = out / "res" / "seed0"
    assert not (run / "done.json").exists() and len(_lines(run / "metrics.jsonl")) == 1
    monkeypatch.setattr(runner, "train", real_train)
    assert _run(config, out, "--only", "res") == 0
    ref = tmp_path / "straight" / "res" / "seed0"
    for name in ("metrics.jsonl", "probes.jsonl", "epoch_probes.jsonl", "spectrum.jsonl"):
        got, want = _drop_seconds(_lines(run / name)), _drop_seconds(_lines(ref / name))
        if name == "spectrum.jsonl":
            got = [{k: v for k, v in r.items() if k != "spectrum"} for r in got]
            want = [{k: v for k, v in r.items() if k != "spectrum"} for r in want]
        assert got == want, name
    assert [r["step"] for r in _lines(run / "probes.jsonl") if r["metric"] == "x_norm2"][:1] == [3]


def test_diverged_run_is_recorded_and_measured_up_to_the_failure(tmp_path):
    extra = '\n[profiles.quick.cells.blowup]\nmodel_config = { kind = "residual" }\ntrain = { lr = 1e30 }\n'
    out = tmp_path / "runs"
    assert _run(_config(tmp_path, epochs=2, extra=extra), out, "--only", "blowup") == 0
    result = json.loads((out / "blowup" / "seed0" / "result.json").read_text())
    assert result["status"] == "diverged" and "training loss became" in result["message"]
    assert result["measured_epochs"] == list(range(result["epochs_trained"] + 1))
    assert (out / "blowup" / "seed0" / "done.json").exists()
    assert json.loads((out / "summary.json").read_text())["cells"][0]["status"] == {"diverged": 1}


@pytest.mark.parametrize("paper", PAPERS)
def test_shipped_configs_validate_and_build_every_model(paper):
    for profile in ("quick", "full"):
        exp = experiment.load_experiment(ROOT / "experiments" / f"{paper}.toml", profile)
        counts = experiment.build_models(exp)
        assert exp.runs and set(counts) == {r.cell for r in exp.runs}
        assert exp.notes and exp.citations and exp.profile_description
        assert all(any(tag in n for tag in ("[R", "[TD", "[V")) for n in exp.notes)
        assert exp.claims, f"{paper} {profile}: no claim declared (each claim's primary metric is fixed before the run)"
        if profile == "quick":
            assert {r.train.data for r in exp.runs} == {"mnist1d"} and exp.device == "cpu"
        else:
            assert all(r.train.data.startswith(("cifar", "svhn")) for r in exp.runs)


def test_profile_cells_merge_over_shared_cells_and_sweeps_expand():
    raw = {"name": "x",
           "cells": {"a": {"model_config": {"kind": "plain"}},
                     "b": {"label": "B", "model_config": {"kind": "residual", "depth": 3},
                           "sweep": {"model_config.connect": ["scaled:0.5", "scaled_ln:2"], "train.lr": [0.1]}}},
           "profiles": {"p": {"seeds": [3, 4], "model_config": {"width": 5}, "train": {"epochs": 4},
                              "measure": {"probes": {"epochs": ["every:2"]}},
                              "cells": {"a": {"skip": True}, "b": {"model_config": {"depth": 2}},
                                        "c": {"seeds": [9], "measure": {"probes": {"metrics": ["grad_norm"]}}}}}}}
    exp = experiment.resolve(raw, "p")
    assert [r.path for r in exp.runs] == ["b_0.5_0.1/seed3", "b_0.5_0.1/seed4", "b_2_0.1/seed3", "b_2_0.1/seed4",
                                          "c/seed9"]
    b2 = exp.runs[2]
    assert b2.train.model_config == {"width": 5, "kind": "residual", "depth": 2, "connect": "scaled_ln:2"}
    assert b2.train.lr == 0.1 and b2.train.epochs == 4 and b2.train.seed == 3
    assert b2.label == "B (connect=scaled_ln:2, lr=0.1)"
    assert b2.setting == {"model_config.connect": "scaled_ln:2", "train.lr": 0.1}
    assert b2.measure["probes"] == {"epochs": [0, 2, 4], "metrics": ["grad_norm", "stream", "singularity"]}
    assert exp.runs[4].measure["probes"]["metrics"] == ["grad_norm"]
    raw["cells"]["b"]["sweep"]["model_config.connect"] = ["scaled:2", "scaled_ln:2"]
    with pytest.raises(LandscapeError, match="run name 'b_2_0.1' occurs twice"):
        experiment.resolve(raw, "p")


def test_parse_epochs():
    assert experiment.parse_epochs("all", 3, "x") == [0, 1, 2, 3]
    assert experiment.parse_epochs(["init", "every:4", "last", 5], 10, "x") == [0, 4, 5, 8, 10]
    assert experiment.parse_epochs("last", 7, "x") == [7]
    with pytest.raises(LandscapeError, match="outside 0..3"):
        experiment.parse_epochs([4], 3, "x")
    with pytest.raises(LandscapeError, match="bad epoch 'every:0'"):
        experiment.parse_epochs(["every:0"], 3, "x")


BAD = [
    ("typo = 1", "unknown key(s) ['typo']"),
    ("[profiles.quick.cells.plain]\nlable = 'x'", "unknown key(s) ['lable']"),
    ("[profiles.quick.cells.res2]\ntrain = { lr = 'fast' }", "cell res2: lr must be a"),
    ("[profiles.quick.cells.res2]\ntrain = { seed = 3 }", "set by the runner"),
    ("[profiles.quick.cells.res2]\nsweep = { 'depth' = [1] }", "sweep: 'depth' must be"),
    ("[profiles.quick.cells.res2]\nmeasure = { spectrum = { epochs = [9] } }", "epoch 9 is outside 0..2"),
    ("[profiles.quick.cells.res2]\nmeasure = { probes = { epochs = 'all', metrics = ['nope'] } }",
     "unknown metrics ['nope']"),
    ("[profiles.quick.cells.res2]\nmodel_config = { kind = 'weird' }", "unknown kind 'weird'"),
    ("[profiles.quick.cells.res2]\nmeasure = { exact = { epochs = 'last', params = ['nothing*'] } }",
     "matches no parameter"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_configs_fail_with_one_line(tmp_path, capsys, extra, message):
    assert _run(_config(tmp_path, extra="\n" + extra + "\n"), tmp_path / "runs", "--list") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_errors(tmp_path, capsys):
    config = _config(tmp_path)
    assert _run(config, tmp_path / "runs", "--profile", "huge") == 2
    assert "no profile 'huge'; available: quick" in capsys.readouterr().err
    assert _run(config, tmp_path / "runs", "--only", "nothing*") == 2
    assert "matches no cell; cells: plain, res" in capsys.readouterr().err
    assert _run(tmp_path / "missing.toml", tmp_path / "runs") == 2
    assert "not found" in capsys.readouterr().err
    assert _run(config, tmp_path / "runs", "--list") == 0
    assert "res/seed0\tfc\t" in capsys.readouterr().out


CLAIM = """
[claims.res_beats_plain]
text = "residual reaches a higher training accuracy"
metric = "train_acc"
cells = ["res", "plain"]
direction = "greater"
secondary = ["grad_dev_max", "init.grad_gain"]
"""


def test_results_module_reads_a_finished_grid_for_the_notebooks(tmp_path):
    from landscape.experiment.results import Grid, spectrum_curves

    config, out = _config(tmp_path, extra=CLAIM), tmp_path / "runs"
    config.write_text(config.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    assert _run(config, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    claim = summary["claims"][0]
    assert claim["name"] == "res_beats_plain" and claim["primary"]["n"] == 2
    assert claim["verdict"] in ("agrees", "disagrees", "inconclusive")
    assert [s["key"] for s in claim["secondary"]] == ["grad_dev_max", "init.grad_gain"]
    grid = Grid(out)
    acc = {c: [json.loads((out / c / f"seed{s}" / "result.json").read_text())["final"]["train_acc"] for s in (0, 1)]
           for c in ("plain", "res")}
    assert grid.values("res", "train_acc") == acc["res"] and grid.mean("plain", "train_acc") == pytest.approx(
        np.mean(acc["plain"]))
    diff = grid.compare("train_acc", "res", "plain")["diff"]
    assert diff == pytest.approx(np.mean(acc["res"]) - np.mean(acc["plain"]))
    assert "| res | 2 | 2 completed |" in grid.table(["train_acc"]) and "res − plain" in grid.claims_table()
    assert [len(h) for h in grid.histories(["plain", "nothing"])["plain"]] == [2, 2]  # two seeds, two epochs
    assert grid.model_config("res") == {"depth": 2, "width": 6, "kind": "residual"}
    spec = grid.spectrum("res", seed=1)
    with np.load(out / "res" / "seed1" / "measure" / "epoch002" / "spectrum.npz") as npz:
        np.testing.assert_array_equal(spec["nodes"], npz["nodes"])
    assert spec["dim"] == grid.exact_eigenvalues("res", seed=1).size and grid.spectrum_epochs("res") == [0, 2]
    curves = grid.curves(["plain", "res"])
    assert set(curves) == {"plain", "residual"}
    direct = spectrum_curves(grid.spectrum("res"))["negative_ratio"]
    assert curves["residual"]["negative_ratio"] == pytest.approx(direct)
    assert curves["residual"]["negative_ratio"] == pytest.approx(grid.spectrum("res")["negative_ratio"])
    steps = grid.records("res", kind="step")
    assert steps and grid.transition("res") == experiment.step_keys(steps)["transition_step"]
