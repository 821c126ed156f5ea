"""Top eigenpairs and stochastic traces against exact float64 answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian, hutchinson_trace, hutchpp_trace, top_eigenpairs

from . import tiny

D = torch.float64


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = tiny.mlp(5, 10, 3).eval()
    X, y = tiny.data((5,), n=40)
    H = exact_hessian(model, tiny.loss, (X, y))
    return HessianOperator(model, tiny.loss, (X, y)), H, torch.linalg.eigvalsh(H).numpy()


def test_lambda_max_within_1e6_relative(problem):
    op, H, eigs = problem
    top = top_eigenpairs(op, k=1)
    assert top.converged
    assert abs(top.eigenvalues[0] - eigs[-1]) <= 1e-6 * abs(eigs[-1])
    u = top.eigenvectors[:, 0]
    assert torch.linalg.vector_norm(H @ u - top.eigenvalues[0] * u) <= 1e-6 * abs(eigs[-1])


def test_top_k_and_smallest_and_magnitude(problem):
    op, H, eigs = problem
    top = top_eigenpairs(op, k=5)
    np.testing.assert_allclose(top.eigenvalues, eigs[::-1][:5], rtol=1e-6, atol=1e-6 * eigs[-1])
    U = top.eigenvectors
    torch.testing.assert_close(U.T @ U, torch.eye(5, dtype=D), rtol=0, atol=1e-8)
    bottom = top_eigenpairs(op, k=2, which="SA")
    np.testing.assert_allclose(bottom.eigenvalues, eigs[:2], atol=1e-6 * eigs[-1])
    big = top_eigenpairs(op, k=3, which="LM")
    order = np.argsort(-np.abs(eigs))[:3]
    np.testing.assert_allclose(big.eigenvalues, eigs[order], atol=1e-6 * eigs[-1])


def test_tiny_dimension_and_budget_limits():
    A = torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=D))
    top = top_eigenpairs(tiny.Dense(A), k=2)  # block size 4 > dim 3: the basis fills the space
    np.testing.assert_allclose(top.eigenvalues, [3.0, 2.0], rtol=1e-12)
    eigs = np.concatenate([np.linspace(0, 1, 300), [1.001]])
    Q, _ = torch.linalg.qr(torch.randn(301, 301, dtype=D, generator=torch.Generator().manual_seed(0)))
    op = tiny.Dense(Q @ torch.diag(torch.from_numpy(eigs)) @ Q.T)
    capped = top_eigenpairs(op, k=1, max_matmats=2)
    assert not capped.converged and op.calls == 2
    with pytest.raises(LandscapeError, match="k must be"):
        top_eigenpairs(op, k=0)
    with pytest.raises(LandscapeError, match="which"):
        top_eigenpairs(op, which="BE")


def test_float32_operator_reaches_its_default_tolerance(problem):
    _, H, eigs = problem
    top = top_eigenpairs(tiny.Dense(H.float()), k=3)
    assert top.converged
    np.testing.assert_allclose(top.eigenvalues, eigs[::-1][:3], rtol=1e-5)


def test_hutchinson_within_three_standard_errors(problem):
    op, _, eigs = problem
    est = hutchinson_trace(op, vectors=200, seed=0, batch=50)
    assert est.n_products == 200 and len(est.samples) == 200
    assert abs(est.trace - eigs.sum()) < 3 * est.stderr
    assert est.stderr < 0.2 * abs(eigs).sum()


def test_hutchinson_is_exact_on_diagonal_matrices():
    A = torch.diag(torch.linspace(-2, 5, 50, dtype=D))  # zᵀAz = Σ a_ii for every ±1 vector z
    est = hutchinson_trace(tiny.Dense(A), vectors=5)
    assert est.trace == pytest.approx(float(A.trace()), rel=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)


def test_hutchpp_beats_hutchinson_on_a_low_rank_dominated_matrix():
    n = 300
    eigs = np.concatenate(
        [[400.0, 300.0, 200.0, 150.0, 100.0], 0.1 * np.abs(np.random.default_rng(0).standard_normal(n - 5))]
    )
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(1)))
    op = tiny.Dense(Q @ torch.diag(torch.from_numpy(eigs)) @ Q.T)
    err_h, err_pp = [], []
    for seed in range(5):
        h = hutchinson_trace(op, vectors=30, seed=seed)
        pp = hutchpp_trace(op, products=30, seed=seed)
        assert pp.n_products == 30
        err_h.append(abs(h.trace - eigs.sum()))
        err_pp.append(abs(pp.trace - eigs.sum()))
    assert np.mean(err_pp) < 0.1 * np.mean(err_h)


def test_hutchpp_on_a_hessian(problem):
    op, _, eigs = problem
    est = hutchpp_trace(op, products=99, seed=3)
    assert abs(est.trace - eigs.sum()) < 3 * est.stderr
