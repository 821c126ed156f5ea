"""Faults during training: kill -9 (mid-epoch or mid-save), interrupted and failed saves, SIGINT.

What must hold: checkpoint.pt is always a complete checkpoint of the last finished epoch (never a
partial file), `--resume` continues the seeded trajectory bit for bit, temp files of killed writers are
cleaned up, and an interruption tells the user how to resume.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ranks import worker_env

from landscape import train as T
from landscape.checkpoint import load_checkpoint, remove_stale_temp_files
from landscape.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
CFG = {"model": "fc", "model_config": {"kind": "plain", "connect": "ortho_feature:0.5", "depth": 3, "width": 16},
       "n_samples": 200, "batch_size": 50, "optimizer": "sgd", "lr": 0.05, "clip_grad": 1.0,
       "device": "cpu", "progress": False}
ARGV = ["--model-config", json.dumps(CFG["model_config"]), "--n-samples", "200", "--batch-size", "50",
        "--optimizer", "sgd", "--lr", "0.05", "--clip-grad", "1.0", "--device", "cpu", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("shared_cache")


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(".*.tmp"))


def test_kill9_mid_run_resumes_the_uninterrupted_trajectory(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "landscape.train", *ARGV, "--epochs", "500", "--out", str(run)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=worker_env())
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.2))              # anywhere in an epoch, a save or an evaluation
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_checkpoint(run / "checkpoint.pt")     # complete: a kill mid-save left the previous one
    done = meta["epoch"]
    assert 1 <= done < 500
    assert all(f".{proc.pid}." in name for name in _temp_files(run))   # only the killed writer's
    cfg = {**CFG, "epochs": done + 2, "out": str(run)}
    resumed = T.train({**cfg, "resume": True})
    reference = T.train({**cfg, "out": None})
    for (k, a), b in zip(reference["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert _strip(resumed["history"]) == _strip(reference["history"])
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, done + 3))
    assert _temp_files(run) == []                       # the killed writer's temp files were cleaned up


_SAVER = """
import sys, torch
from landscape.checkpoint import save_checkpoint
from landscape.models import build
model = build("fc", kind="plain", depth=4, width=512, in_dim=40, n_classes=10)
params = list(model.parameters())
for epoch in range(1, 10**6):
    with torch.no_grad():
        for p in params:
            p.fill_(epoch)
    save_checkpoint(sys.argv[1], model, meta={"epoch": epoch})
    print(epoch, flush=True)
"""


def test_kill9_mid_save_never_leaves_a_partial_checkpoint(tmp_path):
    """Writers saving back to back (~3 MB each) are killed at random moments, most of them mid-write:
    checkpoint.pt always loads, holds one consistent epoch, and at least the last save that returned."""
    paths = [tmp_path / f"w{i}" / "checkpoint.pt" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, str(p)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=worker_env()) for p in paths]
    returned = []                                       # the last epoch whose save had returned
    try:
        for proc, saves in zip(procs, (2, 5)):
            printed = [proc.stdout.readline() for _ in range(saves)]
            time.sleep(random.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            returned.append(int((printed + proc.stdout.read().split())[-1]))
    finally:
        for proc in procs:
            proc.kill()
    for proc, path, last in zip(procs, paths, returned):
        model, meta = load_checkpoint(path)
        assert meta["epoch"] >= last
        assert all(torch.all(p == meta["epoch"]) for p in model.parameters())
        leftovers = _temp_files(path.parent)
        assert all(name.startswith(f".checkpoint.pt.{proc.pid}.") for name in leftovers)
        assert [p.name for p in remove_stale_temp_files(path.parent)] == leftovers
        assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_interrupted_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """An interrupt in the middle of writing epoch 2 leaves epoch 1's file and removes the temp file; the
    run resumes from epoch 1 as if nothing happened."""
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:                              # the save of epoch 2
            f.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        T.train({**CFG, "epochs": 3, "out": str(run)})
    assert load_checkpoint(run / "checkpoint.pt")[1]["epoch"] == 1 and _temp_files(run) == []
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

    monkeypatch.undo()
    resumed = T.train({**CFG, "epochs": 3, "out": str(run), "resume": True})
    reference = T.train({**CFG, "epochs": 3})
    for a, b in zip(reference["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(a, b)


def test_disk_full_mid_run_is_a_one_line_error_naming_the_kept_epoch(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert run_cli(T.main, [*ARGV, "--epochs", "3", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "No space left on device" in err and "still holds epoch 1" in err
    assert load_checkpoint(run / "checkpoint.pt")[1]["epoch"] == 1 and _temp_files(run) == []
    monkeypatch.undo()
    reference = T.train({**CFG, "epochs": 3})
    resumed = T.train({**CFG, "epochs": 3, "out": str(run), "resume": True})
    for a, b in zip(reference["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(a, b)


def test_sigint_stops_at_a_step_boundary_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """SIGINT in epoch 2 (raised by a step probe in this very process): exit 130, epoch 1 kept, one line
    that says how to resume; the resumed run equals an uninterrupted one."""
    run = tmp_path / "run"

    def sigint_at_step_6(ctx):
        def probe(step, model, batch, loss):
            if step == 6:
                os.kill(os.getpid(), signal.SIGINT)
        return probe

    monkeypatch.setitem(T.PROBES, "sigint", sigint_at_step_6)
    old = signal.getsignal(signal.SIGINT)
    rc = run_cli(T.main, [*ARGV, "--epochs", "3", "--out", str(run), "--probes", "sigint", "--probe-every", "1"])
    assert signal.getsignal(signal.SIGINT) is old      # the handler was put back
    err = capsys.readouterr().err.strip()
    assert rc == 130 and err.splitlines() == [err]
    assert err.startswith("interrupted by SIGINT:") and "holds epoch 1" in err and err.endswith(
        "resume with --resume")
    assert load_checkpoint(run / "checkpoint.pt")[1]["epoch"] == 1
    resumed = T.train({**CFG, "epochs": 3, "out": str(run), "resume": True, "probes": []})
    reference = T.train({**CFG, "epochs": 3})
    assert _strip(resumed["history"]) == _strip(reference["history"])
