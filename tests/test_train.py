"""landscape.train: schedules, config merging, learning, exact resume, NaN stop, signals, probes."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ranks import worker_env

from landscape import train as T
from landscape.checkpoint import load_checkpoint
from landscape.cli import run_cli
from landscape.data import TensorData, load_data
from landscape.errors import LandscapeError
from landscape.models import build

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "fc", "model_config": {"kind": "residual", "depth": 2, "width": 16}, "n_samples": 200,
        "batch_size": 50, "epochs": 2, "device": "cpu", "progress": False}


pytestmark = pytest.mark.usefixtures("shared_cache")


def test_lr_factor_schedules():
    cfg = T.TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    f = [T.lr_factor(s, 5, cfg) for s in range(50)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f[10] == 1.0 and f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert f[49] == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    step = T.TrainConfig(epochs=10, schedule="step", milestones=[3, 6], gamma=0.2)
    assert [T.lr_factor(e * 4, 4, step) for e in range(8)] == pytest.approx([1, 1, 1, .2, .2, .2, .04, .04])
    assert T.lr_factor(17, 4, T.TrainConfig()) == 1.0


def test_config_file_and_flags_merge(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('model = "fc"\nlr = 0.5\nepochs = 7\nmilestones = [2, 4]\n'
                    '[model_config]\nkind = "hyper"\ndepth = 5\n')
    cfg = T.config_from_args(["--config", str(toml), "--lr", "0.25", "--model-config", '{"depth": 3}',
                              "--milestones", "5,9"])
    assert (cfg.lr, cfg.epochs, cfg.milestones) == (0.25, 7, [5, 9])
    assert cfg.model_config == {"kind": "hyper", "depth": 3}
    assert T.config_from_args([]) == T.TrainConfig()
    toml.write_text("learning_rate = 1\n")
    with pytest.raises(LandscapeError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        T.config_from_args(["--config", str(toml)])
    with pytest.raises(LandscapeError, match="not found"):
        T.config_from_args(["--config", str(tmp_path / "none.toml")])
    with pytest.raises(LandscapeError, match="optimizer"):
        T.TrainConfig.from_dict({"optimizer": "lbfgs"})


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("train_*.toml")), ids=lambda p: p.stem)
def test_shipped_training_configs_build(path):
    cfg = T.TrainConfig.from_dict(T.load_toml(path))
    image = cfg.data != "mnist1d"
    X = torch.zeros((1, 3, 32, 32) if image else (1, 40))
    n_classes = {"cifar10": 10, "cifar100": 100, "cifar100-coarse": 20}.get(cfg.data, 10)
    fake = TensorData(X, torch.zeros(1, dtype=torch.int64), n_classes, {}, torch.zeros(1), torch.ones(1))
    model = build(cfg.model, T.resolved_model_config(cfg, fake))
    assert model(X).shape == (1, n_classes)


def test_training_lowers_the_loss(tmp_path):
    cfg = {**TINY, "epochs": 6, "lr": 1e-2, "n_samples": 400, "out": str(tmp_path / "run")}
    data = load_data(n_samples=400)
    first = build("fc", T.resolved_model_config(T.TrainConfig.from_dict(cfg), data))
    initial, _ = T.evaluate(first, data)
    result = T.train(cfg)
    final, acc = T.evaluate(result["model"], data)
    assert result["status"] == "completed" and len(result["history"]) == 6
    assert final < 0.8 * initial and acc > 0.3
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 7)) and lines == result["history"]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["lr"] == 1e-2 and record["torch"] == torch.__version__ and "git" in record
    model, meta = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert meta["epoch"] == 6 and meta["data"]["n_samples"] == 400
    x = data.X[:9]
    assert torch.equal(model(x), result["model"].eval()(x))
    with pytest.raises(LandscapeError, match="pass --resume"):
        T.train(cfg)


class _Kill(Exception):
    pass


def test_resume_equals_an_uninterrupted_run(tmp_path):
    """Stochastic orthogonal updates (global RNG), shuffling, SGD momentum, warm-up + cosine, clipping and
    BiasReg all carry state across the interruption."""
    cfg = {**TINY, "epochs": 4, "optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "warmup_epochs": 1,
           "clip_grad": 1.0, "bias_reg": 1e-3, "weight_decay": 1e-4,
           "model_config": {"kind": "plain", "connect": "ortho_feature:0.5", "depth": 3, "width": 16}}
    full = T.train({**cfg, "out": str(tmp_path / "full")})

    def kill_mid_epoch_3(step, model, batch, loss):
        if step == 10:                                  # 4 steps per epoch: the middle of epoch 3
            raise _Kill

    with pytest.raises(_Kill):
        T.train({**cfg, "out": str(tmp_path / "cut")}, step_callbacks=[kill_mid_epoch_3])
    _, meta = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert meta["epoch"] == 2
    resumed = T.train({**cfg, "out": str(tmp_path / "cut"), "resume": True})
    for (k, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), k
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4]
    again = T.train({**cfg, "out": str(tmp_path / "cut"), "resume": True})    # finished: nothing to do
    assert again["epoch"] == 4
    assert torch.equal(next(again["model"].parameters()), next(resumed["model"].parameters()))
    with pytest.raises(LandscapeError, match="different configuration.*lr"):
        T.train({**cfg, "lr": 0.1, "out": str(tmp_path / "cut"), "resume": True})


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = {**TINY, "epochs": 3, "lr": 1e-3, "schedule": "step", "milestones": [1], "gamma": 1e30,
           "out": str(run)}
    snapshot = {}

    def remember(step, model, batch, loss):
        if step == 5:                                   # first step of epoch 2, after epoch 1 was saved
            snapshot["bytes"] = (run / "checkpoint.pt").read_bytes()

    with pytest.raises(T.NonFiniteLoss) as e:
        T.train(cfg, step_callbacks=[remember])
    msg = str(e.value)
    assert "\n" not in msg and "epoch 2" in msg and "still holds epoch 1" in msg
    assert (run / "checkpoint.pt").read_bytes() == snapshot["bytes"]
    assert load_checkpoint(run / "checkpoint.pt")[1]["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_cli_bad_input_exits_2_in_one_line(tmp_path, capsys):
    argv = ["--n-samples", "200", "--epochs", "2", "--model-config", '{"depth": 2, "width": 8}',
            "--lr", "1e-3", "--schedule", "step", "--milestones", "1", "--gamma", "1e30", "--device", "cpu",
            "--out", str(tmp_path / "r")]
    assert run_cli(T.main, argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: training loss became") and "still holds epoch 1" in err
    with pytest.raises(LandscapeError, match="needs a CUDA device"):
        T.train({**TINY, "bf16": True})


def test_sigterm_leaves_a_resumable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "landscape.train", "--n-samples", "200", "--epochs", "500",
                             "--batch-size", "50", "--model-config", '{"depth": 2, "width": 16}',
                             "--device", "cpu", "--out", str(run)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=worker_env())
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "resume with --resume" in err and "Traceback" not in err
    _, meta = load_checkpoint(run / "checkpoint.pt")
    done = meta["epoch"]
    assert 1 <= done < 500
    assert len((run / "metrics.jsonl").read_text().splitlines()) == done
    result = T.train({**TINY, "model_config": {"depth": 2, "width": 16}, "epochs": done + 1, "out": str(run),
                      "resume": True})
    assert result["status"] == "completed"
    assert [h["epoch"] for h in result["history"]] == list(range(1, done + 2))


def test_probes_are_called_every_k_steps_and_closed(monkeypatch):
    calls, closed = [], []

    class Probe:
        def __init__(self, ctx):
            assert ctx.train_data.X.shape == (200, 40) and ctx.out is None
            self.ctx = ctx

        def __call__(self, step, model, batch, loss):
            assert batch[0].shape[1] == 40 and loss.dim() == 0
            calls.append(step)

        def close(self):
            closed.append(True)

    monkeypatch.setitem(T.PROBES, "count", Probe)
    T.train({**TINY, "probes": ["count"], "probe_every": 3})
    assert calls == [3, 6] and closed == [True]                # 2 epochs × 4 steps
    with pytest.raises(LandscapeError, match=r"unknown probe\(s\) \['nope'\]"):
        T.train({**TINY, "probes": ["nope"]})


def test_images_are_flattened_for_fc_and_procrustes_runs(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, 4)]}, f)
    common = {**TINY, "data": "cifar10", "data_root": str(tmp_path), "n_samples": None, "epochs": 1,
              "batch_size": 8, "augment": True}
    fc = T.train({**common, "model_config": {"depth": 2, "width": 8}})
    assert fc["model"].build_spec["config"]["in_dim"] == 3072
    proc = T.train({**common, "model": "procresnet", "model_config": {"depth": 13, "width": 2},
                    "procrustes_p": 1.0, "optimizer": "sgd", "lr": 0.01})
    from landscape.models.procrustes import conv_singular_values

    for conv, grid in proc["model"].procrustes_targets()[1:]:   # 1x1 transitions: one projection is exact
        sv = conv_singular_values(conv.weight.detach(), grid)
        target = math.sqrt(conv.out_channels / conv.in_channels)
        torch.testing.assert_close(sv, torch.full_like(sv, target))
