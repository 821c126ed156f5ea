"""landscape.train's callbacks and optional outputs: epoch callbacks, --keep-epochs, --measure-samples,
--tensorboard, and probes built by the orchestrator (the probes package never imports training)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ranks import worker_env

from landscape import train as T
from landscape.checkpoint import load_checkpoint
from landscape.cli import run_cli
from landscape.data import MEASUREMENT_RULE, load_data, measurement_set
from landscape.models import build
from landscape.probes import run_probes

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "fc", "model_config": {"kind": "residual", "depth": 2, "width": 16}, "n_samples": 200,
        "batch_size": 50, "epochs": 2, "device": "cpu", "progress": False}
ARGV = ["--model-config", '{"kind": "residual", "depth": 2, "width": 16}', "--n-samples", "200",
        "--batch-size", "50", "--epochs", "2", "--device", "cpu", "--no-progress", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("shared_cache")


def read(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


class _Kill(Exception):
    pass


def test_epoch_callbacks_see_each_record_after_its_checkpoint(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    seen = []

    def on_epoch(epoch, model, record):
        seen.append((epoch, record, load_checkpoint(ckpt)[1]["epoch"], model.training))

    result = T.train({**TINY, "out": str(ckpt.parent)}, epoch_callbacks=[on_epoch])
    assert [s[0] for s in seen] == [1, 2] and [s[2] for s in seen] == [1, 2]
    assert [s[1] for s in seen] == result["history"] == read(ckpt.parent / "metrics.jsonl")
    assert all(s[3] for s in seen)                       # evaluation put the model back in training mode


def test_keep_epochs_keeps_the_initial_weights_and_every_epoch_across_a_resume(tmp_path):
    run = tmp_path / "run"
    cfg = {**TINY, "epochs": 3, "keep_epochs": True, "out": str(run)}

    def kill(step, model, batch, loss):
        if step == 10:                                   # 4 steps per epoch: in epoch 3
            raise _Kill

    with pytest.raises(_Kill):
        T.train(cfg, step_callbacks=[kill])
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt"]
    T.train({**cfg, "resume": True})
    names = sorted(p.name for p in (run / "epochs").iterdir())
    assert names == [f"epoch_{e:04d}.pt" for e in range(4)]   # complete files only, no temp files
    # epoch 0 = the weights the seeded constructor gives, built here independently of the training code
    data = load_data(n_samples=200)
    torch.manual_seed(0)
    init = build("fc", {"kind": "residual", "depth": 2, "width": 16, "in_dim": 40, "n_classes": data.n_classes,
                        "seed": 0})
    model0, meta0 = load_checkpoint(run / "epochs" / "epoch_0000.pt")
    assert (meta0["epoch"], meta0["step"], meta0["history"]) == (0, 0, [])
    for (k, a), b in zip(init.state_dict().items(), model0.state_dict().values()):
        assert torch.equal(a, b), k
    for e in (1, 2):
        _, meta = load_checkpoint(run / "epochs" / f"epoch_{e:04d}.pt")
        assert (meta["epoch"], meta["step"]) == (e, 4 * e)
    assert (run / "epochs" / "epoch_0003.pt").read_bytes() == (run / "checkpoint.pt").read_bytes()
    plain = tmp_path / "plain"
    T.train({**TINY, "epochs": 1, "out": str(plain)})
    assert not (plain / "epochs").exists()


def test_measure_samples_fix_the_singularity_measurement_set(tmp_path):
    """The singularity probe runs on `landscape.data.measurement_set` of --measure-samples, recorded in
    config.json; another set (one sample more) gives other values."""
    seen = {}

    def keep(step, model, batch, loss):                 # step callbacks run before the probes
        if step == 4:
            seen["model"] = copy.deepcopy(model)

    T.train({**TINY, "out": str(tmp_path), "probes": ["singularity"], "probe_every": 4, "measure_samples": 30},
            step_callbacks=[keep])
    records = [r for r in read(tmp_path / "probes.jsonl") if r["step"] == 4]
    X = measurement_set(load_data(n_samples=200), 30)[0]
    recorded = json.loads((tmp_path / "config.json").read_text())["measurement_sets"]
    assert recorded == {"singularity": {"samples": 30, "of": 200, "rule": MEASUREMENT_RULE}}
    expect = run_probes(seen["model"].eval(), None, X, metrics="singularity", step=4)
    got = {(r["block"], r["metric"]): r["value"] for r in records}
    assert len(got) == len(expect) > 0
    for r in expect:
        assert got[(r["block"], r["metric"])] == pytest.approx(r["value"], rel=1e-6, nan_ok=True), r
    other = run_probes(seen["model"].eval(), None, measurement_set(load_data(n_samples=200), 31)[0],
                       metrics="singularity")
    assert any(r["value"] != pytest.approx(got[(r["block"], r["metric"])], rel=1e-6, nan_ok=True) for r in other)


def test_tensorboard_mirrors_metrics_and_probe_records(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, tb = tmp_path / "run", tmp_path / "tb"
    assert run_cli(T.main, [*ARGV, "--out", str(run), "--probes", "grad_norm", "--probe-every", "3",
                            "--tensorboard", str(tb)]) == 0
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    metrics = read(run / "metrics.jsonl")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch"):
        got = [(e.step, e.value) for e in acc.Scalars(f"train/{key}")]
        assert [s for s, _ in got] == [m["step"] for m in metrics]
        assert [v for _, v in got] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    records = read(run / "probes.jsonl")
    assert {r["step"] for r in records} == {3, 6}
    for r in records:
        (event,) = [e for e in acc.Scalars(f"probes/{r['metric']}/{r['block']}") if e.step == r["step"]]
        assert event.value == pytest.approx(r["value"], rel=1e-6)


def test_tensorboard_missing_is_a_one_line_error_before_any_compute(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert run_cli(T.main, [*ARGV, "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "tensorboard" in err and "pip install" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_cli_flags_of_the_callbacks():
    cfg = T.config_from_args(["--keep-epochs", "--measure-samples", "30", "--tensorboard", "tb", "--probes",
                              "grad_norm,stream", "--probe-every", "7"])
    assert (cfg.keep_epochs, cfg.measure_samples, cfg.tensorboard, cfg.probes, cfg.probe_every) == (
        True, 30, "tb", ["grad_norm", "stream"], 7)


def test_python_m_runs_probes_and_the_probes_package_imports_no_training(tmp_path):
    check = ("import sys, landscape.probes, landscape.hessian; "
             "bad = [m for m in sys.modules if m.startswith(('landscape.train', 'landscape.experiment'))]; "
             "assert not bad, bad")
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=worker_env(), check=True, timeout=120)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "landscape.train", *ARGV, "--epochs", "1", "--out", str(run),
                           "--probes", "grad_norm,stream", "--probe-every", "2"], cwd=ROOT, env=worker_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = read(run / "probes.jsonl")
    assert {r["step"] for r in records} == {2, 4} and {"grad_ratio", "x_norm2"} <= {r["metric"] for r in records}


def test_tensorboard_dir_that_is_a_file_is_refused_before_any_compute(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert run_cli(T.main, [*ARGV, "--out", str(tmp_path / "run"), "--tensorboard", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --tensorboard {blocker} exists and is not a directory"
    assert blocker.read_text() == "keep me" and not (tmp_path / "run").exists()


def test_curvature_probe_matches_the_exact_hessian_and_leaves_training_unchanged(tmp_path):
    pytest.importorskip("landscape.hessian.monitor", reason="the curvature monitor is not in this checkout")
    from landscape.hessian import exact_hessian

    seen = {}

    def keep(step, model, batch, loss):                 # step callbacks run before the probes
        if step == 4:
            seen["model"] = copy.deepcopy(model)

    cfg = {**TINY, "model_config": {"kind": "residual", "depth": 2, "width": 8}, "optimizer": "sgd", "lr": 0.05,
           "momentum": 0.0}
    probed = T.train({**cfg, "out": str(tmp_path), "probes": ["curvature"], "probe_every": 4, "measure_samples": 64},
                     step_callbacks=[keep])
    plain = T.train(cfg)
    for (k, a), b in zip(plain["model"].state_dict().items(), probed["model"].state_dict().values()):
        assert torch.equal(a, b), k                      # the monitor's RNG and passes leave training alone
    records = read(tmp_path / "probes.jsonl")
    lam = {r["step"]: r for r in records if r["metric"] == "lambda_max"}
    assert sorted(lam) == [4, 8] and lam[8]["epoch"] == 2.0
    data = load_data(n_samples=200)
    model = seen["model"].double().eval()
    X, y = measurement_set(data, 64)
    H = exact_hessian(model, torch.nn.functional.cross_entropy, [(X.double(), y)])
    top = torch.linalg.eigvalsh(H)[-1].item()
    assert lam[4]["value"] == pytest.approx(top, rel=1e-3)
    eos = {r["step"]: r["value"] for r in records if r["metric"] == "eos_ratio"}
    assert eos[4] == pytest.approx(lam[4]["value"] * 0.05 / 2, rel=1e-6)   # plain SGD: λ·η/2
