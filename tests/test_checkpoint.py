"""landscape.checkpoint: exact round trips, atomic writes, and one-line errors for every bad file."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from landscape.errors import LandscapeError
from landscape.models import build

ROOT = Path(__file__).resolve().parents[1]
META = {"data": {"name": "mnist1d", "split": "train"}, "epoch": 3}


def _model(**cfg):
    return build("fc", **{"kind": "residual", "depth": 3, "width": 8, "in_dim": 40, "n_classes": 10, **cfg})


@pytest.fixture
def saved(tmp_path):
    model = _model(seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(5, 40)).sum().backward()
    opt.step()
    extra = {"note": torch.arange(3)}
    path = save_checkpoint(tmp_path / "ck.pt", model, meta=META, optimizer=opt, extra=extra)
    return path, model, opt


def test_round_trip_gives_identical_outputs_and_state(saved, tmp_path):
    path, model, opt = saved
    loaded, meta = load_checkpoint(path)
    x = torch.randn(7, 40)
    assert not loaded.training
    assert torch.equal(loaded(x), model.eval()(x))
    assert meta == {**META, "model": model.build_spec}
    assert loaded.build_spec == model.build_spec
    state = load_training_state(path)
    assert state["format"] == "landscape-checkpoint" and state["version"] == 1
    assert torch.equal(state["extra"]["note"], torch.arange(3))
    fresh = torch.optim.Adam(_model().parameters(), lr=1e-2)
    fresh.load_state_dict(state["optimizer_state"])
    for a, b in zip(fresh.state.values(), opt.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]      # no temp file left behind


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand(2)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_failed_save_keeps_the_old_file(saved, monkeypatch):
    path, model, _ = saved
    before = path.read_bytes()

    def half_write(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, meta=META)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["ck.pt"]
    with pytest.raises(LandscapeError, match="JSON-able"):
        save_checkpoint(path, model, meta={"epoch": object()})
    assert path.read_bytes() == before


def _bad_files(tmp_path, saved_path):
    """name -> (path, expected fragment of the message)."""
    d = tmp_path / "bad"
    d.mkdir()
    out = {"missing": (d / "nope.pt", "no such file"), "directory": (d, "is a directory")}
    (d / "empty.pt").write_bytes(b"")
    out["empty"] = (d / "empty.pt", "file is empty")
    blob = saved_path.read_bytes()
    (d / "trunc.pt").write_bytes(blob[: len(blob) // 2])
    out["truncated"] = (d / "trunc.pt", "corrupt or truncated")
    (d / "garbage.pt").write_bytes(b"\x00\x01garbage" * 50)
    out["garbage"] = (d / "garbage.pt", "")
    torch.save({"weights": [1, 2]}, d / "foreign.pt")
    out["foreign"] = (d / "foreign.pt", "not a landscape checkpoint (a dict with keys weights)")
    torch.save(_model().state_dict(), d / "state_dict.pt")
    out["state_dict"] = (d / "state_dict.pt", "not a landscape checkpoint (a plain state_dict)")
    payload = torch.load(saved_path, weights_only=True)
    for name, change, msg in [
        ("version", lambda p: p.update(version=2), "format version 2 is not supported"),
        ("unknown_model", lambda p: p["meta"]["model"].update(name="mlp9000"), "unknown model 'mlp9000'"),
        ("bad_config", lambda p: p["meta"]["model"]["config"].update(depth=-1), "cannot rebuild model 'fc'"),
        ("no_spec", lambda p: p["meta"].pop("model"), "no model build spec"),
        ("shape", lambda p: p["meta"]["model"]["config"].update(width=9), "shape (saved vs model)"),
        ("missing_keys", lambda p: p["model_state"].pop("head.bias"), "missing: head.bias"),
        ("unexpected", lambda p: p["model_state"].update(extra=torch.ones(1)), "unexpected: extra"),
    ]:
        p = torch.load(saved_path, weights_only=True) if name != "version" else payload
        change(p)
        torch.save(p, d / f"{name}.pt")
        out[name] = (d / f"{name}.pt", msg)
    return out


def test_bad_files_give_one_line_checkpoint_errors(saved, tmp_path):
    for name, (path, fragment) in _bad_files(tmp_path, saved[0]).items():
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        msg = str(e.value)
        assert isinstance(e.value, LandscapeError), name
        assert "\n" not in msg and str(path) in msg and fragment in msg, (name, msg)


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_runs_nothing(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"format": "landscape-checkpoint", "payload": _Evil(marker)}
    if container == "torch_zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with open(path, "rb") as f:                                 # the file really runs code when trusted
        (torch.load(f, weights_only=False) if container == "torch_zip" else pickle.load(f))["payload"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert not marker.exists()
    msg = str(e.value)
    assert "\n" not in msg and "refused to load" in msg and str(path) in msg
    if container == "torch_zip":
        assert "imports io.open" in msg or "imports builtins.open" in msg


@pytest.mark.parametrize("kind", ["truncated", "malicious"])
def test_cli_reports_a_bad_checkpoint_in_one_line(saved, tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    if kind == "truncated":
        blob = saved[0].read_bytes()
        (run / "checkpoint.pt").write_bytes(blob[:100])
    else:
        torch.save({"x": _Evil(tmp_path / "pwned")}, run / "checkpoint.pt")
    proc = subprocess.run([sys.executable, "-m", "landscape.train", "--out", str(run), "--resume",
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LANDSCAPE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint ") and "checkpoint.pt" in lines[0]
    assert not (tmp_path / "pwned").exists()


def test_blocked_module_wording_is_recognised(tmp_path):
    """torch ≥ 2.13 refuses os.system with "unsupported GLOBAL posix.system whose module posix is blocked"."""
    class _System:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"x": _System()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "refused to load" in msg and "system" in msg and "arbitrary code execution" in msg
