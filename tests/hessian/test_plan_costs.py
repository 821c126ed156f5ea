"""What building and applying a HessianOperator spends, pinned without timing: `auto` skips func's one-time
setup where func cannot win, the checks hold one kept graph at a time and hand the last one to the first
pass, the graph cache stays within its share of the budget, merging is capped, and a CPU takes one backward
per vector (each product still checked against exact float64 Hessians)."""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F

from landscape.hessian import HessianOperator, exact_hessian
from landscape.hessian.operators import merging
from landscape.hessian.operators import plan as _plan
from landscape.hessian.operators.backends import DoubleBackwardHessian

from . import tiny

ROOT = Path(__file__).resolve().parents[2]
MODELS = tiny.models()


def _batches(name: str, n: int = 12, parts: int = 2):
    model, shape = MODELS[name]
    X, y = tiny.data(shape, n=n)
    return model, list(zip(X.chunk(parts), y.chunk(parts))), (X, y)


def test_conv_net_chooses_double_backward_without_loading_forward_mode_ad():
    """A fresh process (forward-mode AD not set up yet): building `auto` on a ResNet must not import
    torch._dynamo or the jvp decompositions, the set-up that timing func would pay."""
    code = """
import sys, torch, torch.nn.functional as F
from landscape.models import build
from landscape.hessian import HessianOperator
torch.manual_seed(0)
model = build("resnetv2", depth=8, width=2, in_channels=1, n_classes=3).eval()
X, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
op = HessianOperator(model, F.cross_entropy, [(X[:2], y[:2]), (X[2:], y[2:])])
loaded = [m for m in ("torch._dynamo", "torch._decomp.decompositions_for_jvp") if m in sys.modules]
print(op.backend, op.info()["backend_choice"], loaded, sep="|")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    backend, choice, loaded = proc.stdout.strip().splitlines()[-1].split("|")
    assert backend == "double_backward" and loaded == "[]"
    assert choice.startswith("func not timed: Conv2d modules hold 9") and "% of the parameters" in choice


def test_auto_times_func_where_it_can_win():
    """Without convolutions (Hessian), and for the GGN, whose func is the faster one on conv nets."""
    import torch._decomp.decompositions_for_jvp  # noqa: F401 - set up already: the 30 ms rule does not apply

    from landscape.hessian import GGNOperator, exact_ggn

    model, batches, (X, y) = _batches("mlp")
    op = HessianOperator(model, tiny.loss, batches)
    assert op.info()["backend_choice"].startswith("timed on the first batch: double_backward")
    V = torch.randn(op.dim, 2, dtype=tiny.D)
    torch.testing.assert_close(op.matmat(V), exact_hessian(model, tiny.loss, (X, y)) @ V, rtol=1e-8, atol=1e-10)
    named = HessianOperator(model, tiny.loss, batches, backend="func")
    assert named.backend == "func" and named.info()["backend_choice"] == "named"
    conv, batches, (X, y) = _batches("convbn")
    assert HessianOperator(conv, tiny.loss, batches).info()["backend_choice"].startswith("func not timed: Conv2d")
    ggn = GGNOperator(conv, tiny.loss, batches)
    assert ggn.info()["backend_choice"].startswith("timed on the first batch")
    V = torch.randn(ggn.dim, 2, dtype=tiny.D)
    torch.testing.assert_close(ggn.matmat(V), exact_ggn(conv, tiny.loss, (X, y)) @ V, rtol=1e-8, atol=1e-10)


def test_slow_share_counts_the_parameters_of_convolutions():
    from landscape.models import build

    vit = build("vit", preset="tiny", img_size=8, patch=2, in_channels=1, dim=8, depth=2, heads=2, n_classes=3)
    convbn = tiny.ConvBN().to(tiny.D).eval()
    y = torch.tensor([0, 2])
    shares = {}
    for name, model, X in (("vit", vit.to(tiny.D).eval(), torch.randn(2, 1, 8, 8, dtype=tiny.D)),
                           ("mlp", tiny.mlp().eval(), torch.randn(2, 5, dtype=tiny.D)),
                           ("convbn", convbn, torch.randn(2, 2, 5, 5, dtype=tiny.D))):
        op = HessianOperator(model, F.cross_entropy, (X, y), backend="double_backward")
        shares[name] = _plan.Planner(op.snapshot, _plan.Request(HessianOperator._backends, "auto", 1)).slow_share()
    patch = vit.patch_embed.weight.numel() + vit.patch_embed.bias.numel()
    assert shares["vit"] == ("Conv2d", patch / sum(p.numel() for p in vit.parameters()))
    assert shares["vit"][1] < _plan.SLOW_SHARE and shares["mlp"] == ("", 0)
    conv = sum(p.numel() for m in (convbn.c1, convbn.c2) for p in m.parameters())
    assert shares["convbn"] == ("Conv2d", conv / sum(p.numel() for p in convbn.parameters()))
    assert shares["convbn"][1] > _plan.SLOW_SHARE


def test_checks_hold_one_graph_at_a_time_and_the_last_one_serves_the_first_pass(monkeypatch):
    made: list[weakref.ref] = []
    alive_at_prepare: list[int] = []
    prepare = DoubleBackwardHessian.prepare

    def counting(self, batch):
        alive_at_prepare.append(sum(r() is not None for r in made))
        state = prepare(self, batch)
        made.append(weakref.ref(state))
        return state

    monkeypatch.setattr(DoubleBackwardHessian, "prepare", counting)
    model, batches, (X, y) = _batches("residual")
    op = HessianOperator(model, tiny.loss, batches, backend="double_backward", merge_batches=False)
    assert alive_at_prepare == [0, 0]  # the trial's graph, then the determinism check's, never both
    V = torch.randn(op.dim, 3, dtype=tiny.D)
    first = op.matmat(V)
    assert alive_at_prepare == [0, 0, 1]  # the first pass reused the check's graph: only batch 2 was prepared
    torch.testing.assert_close(first, exact_hessian(model, tiny.loss, (X, y)) @ V, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(op.matmat(V), first, rtol=0, atol=0)
    assert len(alive_at_prepare) == 3 and op.info()["cached"]


def test_graph_cache_stays_within_its_share_of_the_budget():
    model, batches, (X, y) = _batches("orthogonal", n=10)
    # the light plan (named backend, no trial) sizes every operator from the same measured state, whatever
    # the budget; a tiny budget would otherwise budget the trial and size from a different measurement
    kw = {"backend": "double_backward", "merge_batches": False, "check_deterministic": False,
          "check_symmetric": False}
    per_sample = HessianOperator(model, tiny.loss, batches, **kw).plan.sizing.state_bytes_per_sample
    half = 10 * per_sample  # the states of all 10 samples: the cache may take half the budget
    fits = HessianOperator(model, tiny.loss, batches, max_memory=2 * half, **kw)
    over = HessianOperator(model, tiny.loss, batches, max_memory=2 * half - 2, **kw)
    V = torch.randn(fits.dim, 2, dtype=tiny.D)
    H = exact_hessian(model, tiny.loss, (X, y))
    for op, cached in ((fits, True), (over, False)):
        assert op.plan.sizing.state_bytes_per_sample == per_sample
        torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-10)
        assert op.info()["cached"] is cached
    forced = HessianOperator(model, tiny.loss, batches, max_memory=2 * half - 2, cache=True, **kw)
    forced.matmat(V)
    assert forced.info()["cached"]


def test_merging_is_capped_by_kept_state_unless_asked_for(monkeypatch):
    model, batches, (X, y) = _batches("convbn")
    assert HessianOperator(model, tiny.loss, batches).info()["merge_samples"] is not None
    monkeypatch.setattr(merging, "MERGE_STATE_BYTES", 1)
    capped = HessianOperator(model, tiny.loss, batches)
    asked = HessianOperator(model, tiny.loss, batches, merge_batches=True)
    assert capped.info()["merge_samples"] is None and asked.info()["merge_samples"] is not None
    V = torch.randn(capped.dim, 2, dtype=tiny.D)
    H = exact_hessian(model, tiny.loss, (X, y))
    for op in (capped, asked):
        torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-10)


def test_cpu_takes_one_backward_per_vector_and_the_batched_path_agrees(monkeypatch):
    model, batches, (X, y) = _batches("attention")
    H = exact_hessian(model, tiny.loss, (X, y))
    V = torch.randn(H.shape[0], 4, dtype=tiny.D)
    sequential = HessianOperator(model, tiny.loss, batches, backend="double_backward")
    torch.testing.assert_close(sequential.matmat(V), H @ V, rtol=1e-8, atol=1e-10)
    assert sequential._impl._batched is None  # never tried on a CPU
    monkeypatch.setattr(DoubleBackwardHessian, "sequential_devices", ())
    batched = HessianOperator(model, tiny.loss, batches, backend="double_backward")
    torch.testing.assert_close(batched.matmat(V), sequential.matmat(V), rtol=1e-12, atol=1e-13)
    assert batched._impl._batched is True
