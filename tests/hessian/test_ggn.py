"""GGNOperator against JᵀH_ℓJ formed by brute force, and exact_ggn against closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.hessian import GGNOperator, HessianOperator, exact_ggn, exact_hessian

from . import tiny


def _dense(op) -> torch.Tensor:
    return op.matmat(torch.eye(op.dim, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["func", "double_backward"])
@pytest.mark.parametrize("name", ["mlp", "convbn", "attention"])
def test_ggn_equals_brute_force_and_is_psd(name, backend):
    model, shape = tiny.models()[name]
    X, y = tiny.data(shape, n=9)
    batches = [(X[:4], y[:4]), (X[4:], y[4:])]
    G = exact_ggn(model, tiny.loss, batches)
    op = GGNOperator(model, tiny.loss, batches, backend=backend, merge_batches=False)
    dense = _dense(op)
    torch.testing.assert_close(dense, G, rtol=1e-8, atol=1e-10)
    evals = torch.linalg.eigvalsh((dense + dense.T) / 2)
    assert evals.min() >= -1e-10 * evals.max()


@pytest.mark.parametrize("backend", ["func", "double_backward"])
def test_ggn_with_mse(backend):
    model = tiny.mlp()
    X, _ = tiny.data((5,))
    Y = torch.randn(12, 3, dtype=torch.float64)
    op = GGNOperator(model, F.mse_loss, (X, Y), backend=backend)
    torch.testing.assert_close(_dense(op), exact_ggn(model, F.mse_loss, (X, Y)), rtol=1e-8, atol=1e-10)


def test_linear_model_with_mse_has_ggn_equal_to_hessian():
    """f = W x + b is linear in θ, so the residual term of H vanishes: H = G = Jᵀ (2/(n·c)) J."""
    model = nn.Linear(4, 2).double()
    X = torch.randn(10, 4, dtype=torch.float64)
    Y = torch.randn(10, 2, dtype=torch.float64)
    H = exact_hessian(model, F.mse_loss, (X, Y))
    G = exact_ggn(model, F.mse_loss, (X, Y))
    torch.testing.assert_close(G, H, rtol=1e-10, atol=1e-12)
    # closed form: the weight block of output row i is (2/(n c)) XᵀX, per output
    XtX = 2 * X.T @ X / (10 * 2)
    torch.testing.assert_close(G[:4, :4], XtX)
    torch.testing.assert_close(G[4:8, 4:8], XtX)
    torch.testing.assert_close(G[:4, 4:8], torch.zeros(4, 4, dtype=torch.float64))


def test_exact_ggn_of_softmax_regression_closed_form():
    """Linear model + cross-entropy: G = (1/n) Σ_x (diag(p) − ppᵀ) ⊗ [x;1][x;1]ᵀ (θ ordered W, b)."""
    model = nn.Linear(3, 4).double()
    X = torch.randn(7, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (7,))
    G = exact_ggn(model, F.cross_entropy, (X, y))
    p = torch.softmax(model(X).detach(), 1)
    S = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    WW = torch.einsum("nij,na,nb->iajb", S, X, X).reshape(12, 12) / 7
    Wb = torch.einsum("nij,na->iaj", S, X).reshape(12, 4) / 7
    bb = S.mean(0)
    ref = torch.cat([torch.cat([WW, Wb], 1), torch.cat([Wb.T, bb], 1)], 0)
    torch.testing.assert_close(G, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(G, exact_hessian(model, F.cross_entropy, (X, y)), rtol=1e-10, atol=1e-12)


def test_ggn_differs_from_hessian_for_a_nonlinear_model():
    model, shape = tiny.models()["mlp"]
    X, y = tiny.data(shape)
    G = _dense(GGNOperator(model, tiny.loss, (X, y)))
    H = _dense(HessianOperator(model, tiny.loss, (X, y)))
    assert (G - H).abs().max() > 1e-3
