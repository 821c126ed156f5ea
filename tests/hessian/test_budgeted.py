"""The budgeted plan (no trial product at construction) against exact float64 products, and its deferred checks
refusing what the full trial refuses (random models, wrong double backwards, NaN weights)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian
from landscape.hessian.operators import budgeted
from landscape.hessian.operators.backends import DoubleBackwardHessian
from tests.objective import hf

from . import tiny


@pytest.fixture
def no_trial(monkeypatch):
    """Every construction is budgeted: a trial never fits in zero seconds."""
    monkeypatch.setattr(budgeted, "TRIAL_SECONDS", 0.0)


@pytest.fixture
def counted(monkeypatch):
    calls = {"prepare": 0, "apply": 0}
    prepare, apply = DoubleBackwardHessian.prepare, DoubleBackwardHessian.apply

    def counting_prepare(self, batch):
        calls["prepare"] += 1
        return prepare(self, batch)

    def counting_apply(self, state, tangents):
        calls["apply"] += 1
        return apply(self, state, tangents)

    monkeypatch.setattr(DoubleBackwardHessian, "prepare", counting_prepare)
    monkeypatch.setattr(DoubleBackwardHessian, "apply", counting_apply)
    return calls


def test_affordable_rule():
    probe = budgeted.Probe([], seconds=1e-3, forward_bytes=1 << 20, loss=1.0, attention=False)
    assert budgeted.affordable(probe, 1 << 30) == (True, "")
    slow = budgeted.Probe([], seconds=1.0, forward_bytes=1 << 20, loss=1.0, attention=False)
    ok, why = budgeted.affordable(slow, 1 << 30)
    assert not ok and "forward pass takes 1 s" in why
    big = budgeted.Probe([], seconds=1e-3, forward_bytes=1 << 30, loss=1.0, attention=False)
    ok, why = budgeted.affordable(big, 1 << 32)
    assert not ok and "gradient graphs" in why


def test_budgeted_hf_gpt2_prepares_once_makes_no_product_and_is_exact(no_trial, counted):
    model, batches = hf.gpt2(), hf.token_batches()
    op = HessianOperator(model, None, batches)
    assert counted == {"prepare": 1, "apply": 0}  # construction: one prepared batch, kept for the first pass
    info = op.info()
    assert info["backend"] == "double_backward" and info["attention_kernel"] == "math"  # SDPA seen by the probe
    assert info["checks"][0].startswith("backend trial: skipped (a forward pass takes")
    assert info["asymmetry"] is None
    H = exact_hessian(model, None, batches)
    V = torch.randn(op.dim, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-10)
    assert counted["prepare"] == len(batches)  # the first batch's state was reused
    assert op.info()["asymmetry"] < 1e-10  # checked on the first pass


def test_budgeted_plan_refuses_a_random_model_at_construction(no_trial):
    class Dropping(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x):
            return self.lin(F.dropout(x, 0.5, training=True))

    X, y = tiny.data((5,))
    with pytest.raises(LandscapeError, match="losses of the first batch"):
        HessianOperator(Dropping().double(), tiny.loss, (X, y))


def test_budgeted_plan_refuses_a_wrong_double_backward_on_the_first_pass(no_trial):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(5, 6)), nn.Tanh(), nn.Linear(6, 3)).eval()
    X, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    op = HessianOperator(model, F.cross_entropy, (X, y))
    with pytest.raises(LandscapeError, match=r"not symmetric.*weight_norm"):
        op.matmat(torch.randn(op.dim, 2))
    one_at_a_time = HessianOperator(model, F.cross_entropy, (X, y))
    one_at_a_time.matvec(torch.randn(op.dim))  # one vector: kept until a second comes
    with pytest.raises(LandscapeError, match=r"not symmetric.*weight_norm"):
        one_at_a_time.matvec(torch.randn(op.dim))


def test_budgeted_plan_refuses_nan_products(no_trial):
    model = tiny.mlp()
    X, y = tiny.data((5,))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(LandscapeError, match="not finite"):
        HessianOperator(model, tiny.loss, (X, y)).matvec(torch.ones(sum(p.numel() for p in model.parameters()),
                                                                    dtype=torch.float64))


def test_small_models_keep_the_full_trial():
    model, shape = tiny.models()["mlp"]
    X, y = tiny.data(shape)
    info = HessianOperator(model, tiny.loss, (X, y)).info()
    assert info["checks"][:3] == ["finite", "deterministic", "symmetric"] and info["asymmetry"] is not None
