"""Probes during training (`--probes ... --probe-every K`): a probed run trains exactly as an unprobed one,
its records equal `run_probes` on the step's batch and weights, a resumed run rewrites nothing twice,
and a probe pass leaves RNG, buffers and mode as it found them."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import train as T
from landscape.probes import make_probe_callback, run_probes
from landscape.probes.training import side_effect_free

TINY = {"model": "fc", "n_samples": 200, "batch_size": 50, "epochs": 2, "device": "cpu", "progress": False,
        "model_config": {"kind": "plain", "connect": "ortho_feature:0.5", "depth": 3, "width": 16}}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path_factory.getbasetemp() / "landscape-cache"))


@pytest.fixture(autouse=True)
def _float32():  # training runs in float32 like the CLI
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def read(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_probed_run_trains_exactly_like_an_unprobed_one(tmp_path):
    seen = {}

    def keep(step, model, batch, loss):
        if step == 6:
            seen["model"], seen["batch"], seen["rng"] = copy.deepcopy(model), batch, torch.get_rng_state()

    plain = T.train({**TINY, "out": str(tmp_path / "plain")})
    probed = T.train({**TINY, "out": str(tmp_path / "probed"), "probes": ["grad_norm", "stream", "singularity"],
                      "probe_every": 3}, step_callbacks=[keep])
    for (k, a), b in zip(plain["model"].state_dict().items(), probed["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in plain["history"]] == [h["train_loss"] for h in probed["history"]]
    records = read(tmp_path / "probed" / "probes.jsonl")
    assert sorted({r["step"] for r in records}) == [3, 6]           # 4 steps per epoch, K = 3
    sing = {r["step"] for r in records if r["metric"] == "dead_frac"}
    assert sing == {3, 6}                                            # first probed step of epochs 1 and 2
    assert {r["epoch"] for r in records if r["step"] == 6} == {1.5}
    torch.set_rng_state(seen["rng"])  # the stochastic orthogonal connects draw in the probe's forward too
    expect = run_probes(seen["model"], F.cross_entropy, seen["batch"], metrics=("grad_norm", "stream"), step=6)
    got = {(r["block"], r["metric"]): r["value"] for r in records if r["step"] == 6}
    for r in expect:
        assert got[(r["block"], r["metric"])] == pytest.approx(r["value"], rel=1e-6), r


def test_resume_keeps_one_record_per_step(tmp_path):
    cfg = {**TINY, "epochs": 3, "probes": ["grad_norm"], "probe_every": 2}
    full = T.train({**cfg, "out": str(tmp_path / "full")})
    assert full["status"] == "completed"

    class Kill(Exception):
        pass

    def kill(step, model, batch, loss):
        if step == 7:
            raise Kill

    with pytest.raises(Kill):
        T.train({**cfg, "out": str(tmp_path / "cut")}, step_callbacks=[kill])
    T.train({**cfg, "out": str(tmp_path / "cut"), "resume": True})
    a, b = read(tmp_path / "full" / "probes.jsonl"), read(tmp_path / "cut" / "probes.jsonl")
    assert [(r["step"], r["block"], r["metric"]) for r in a] == [(r["step"], r["block"], r["metric"]) for r in b]
    assert [r["value"] for r in a] == pytest.approx([r["value"] for r in b], rel=1e-6)


def test_callback_for_step_callbacks_and_preserved_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    with side_effect_free(model, train=False):
        assert not model.training
        model(torch.randn(8, 3))
        torch.rand(3)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    from .lookalikes import FCNet

    net = FCNet(depth=2)
    cb = make_probe_callback(["grad_norm"], every=2, loss_fn=F.cross_entropy)
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    cb(1, net, batch, None)
    assert cb.records == []
    cb(2, net, batch, None)
    assert {r["step"] for r in cb.records} == {2} and all(p.grad is None for p in net.parameters())
