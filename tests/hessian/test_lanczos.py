"""Batched Lanczos against dense eigendecompositions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.hessian import as_operator, lanczos, tridiag_to_ritz
from landscape.hessian.solvers.linalg import rademacher

D = torch.float64


def _sym(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = eigs.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(seed)))
    return Q @ torch.diag(eigs.to(D)) @ Q.T


class Counting:
    def __init__(self, A):
        self.A, self.calls, self.widths = A, 0, []
        self.dim, self.dtype, self.device = A.shape[0], A.dtype, A.device

    def matmat(self, V):
        self.calls += 1
        self.widths.append(V.shape[1])
        return self.A @ V


def _op(A: torch.Tensor):
    return as_operator(lambda V: A @ V, A.shape[0], A.dtype)


def test_extremes_match_eigh_and_one_matmat_per_iteration():
    eigs = torch.cat([torch.linspace(-1, 1, 197, dtype=D), torch.tensor([6.0, 9.0, 30.0], dtype=D)])
    A = _sym(eigs)
    mm = Counting(A)
    res = lanczos(mm, iters=50, vectors=3, seed=4)
    assert mm.calls == 50 and set(mm.widths) == {3}
    nodes, weights = res.ritz()
    exact = torch.linalg.eigvalsh(A).numpy()
    for row in nodes:
        np.testing.assert_allclose(row[-3:], exact[-3:], rtol=1e-10)
        assert abs(row[0] - exact[0]) < 1e-3
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-12)


def test_lanczos_relation_and_orthonormal_basis():
    A = _sym(torch.randn(80, dtype=D, generator=torch.Generator().manual_seed(1)))
    res = lanczos(_op(A), iters=30, vectors=2, seed=0, keep_basis=True)
    for p in range(2):
        Q = res.basis[p].T  # [dim, m]
        torch.testing.assert_close(Q.T @ Q, torch.eye(30, dtype=D), rtol=0, atol=1e-12)
        T = torch.diag(torch.from_numpy(res.alpha[p]))
        off = torch.from_numpy(res.beta[p])
        T += torch.diag(off, 1) + torch.diag(off, -1)
        R = A @ Q - Q @ T  # A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ: zero except the last column
        assert R[:, :-1].abs().max() < 1e-10


def test_batched_vectors_equal_separate_runs_and_seed_determinism():
    A = _sym(torch.linspace(0, 3, 60, dtype=D) ** 2)
    res = lanczos(_op(A), iters=20, vectors=3, seed=7)
    again = lanczos(_op(A), iters=20, vectors=3, seed=7)
    np.testing.assert_array_equal(res.alpha, again.alpha)
    np.testing.assert_array_equal(res.beta, again.beta)
    other = lanczos(_op(A), iters=20, vectors=3, seed=8)
    assert np.abs(other.alpha - res.alpha).max() > 1e-3
    starts = rademacher(3, 60, torch.Generator().manual_seed(7))
    for p in range(3):
        one = lanczos(_op(A), iters=20, start=starts[p][:, None])
        np.testing.assert_allclose(one.alpha[0], res.alpha[p], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(one.beta[0], res.beta[p], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reorth", ["full", "selective", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_breakdown_on_few_distinct_eigenvalues(reorth, dtype):
    A = _sym(torch.tensor([1.0, 2.0, 3.0], dtype=D).repeat(20)).to(dtype)
    res = lanczos(_op(A), iters=10, vectors=2, seed=1, reorth=reorth)
    assert res.breakdowns >= 2
    assert np.isfinite(res.alpha).all() and np.isfinite(res.beta).all()
    nodes, weights = res.ritz()
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-6)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    for row_n, row_w in zip(nodes, weights):
        heavy = np.sort(row_n[row_w > 1e-3])
        np.testing.assert_allclose(heavy, [1.0, 2.0, 3.0], atol=tol)
        np.testing.assert_allclose(row_w[row_w > 1e-3].sum(), 1.0, atol=tol)


def test_tridiag_to_ritz_matches_dense():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(6), rng.random(5) + 0.1
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    nodes, weights = tridiag_to_ritz(a, b)
    w, V = np.linalg.eigh(T)
    np.testing.assert_allclose(nodes, w, rtol=1e-12)
    np.testing.assert_allclose(weights, V[0] ** 2, rtol=1e-10)
    assert tridiag_to_ritz(np.array([2.0]), np.array([]))[0][0] == 2.0


def test_operator_input_and_bad_arguments():
    class Op:
        dim, dtype, device = 10, torch.float64, torch.device("cpu")

        def matmat(self, V):
            return 2 * V

    res = lanczos(Op(), iters=1, vectors=2)
    np.testing.assert_allclose(res.alpha, 2.0)
    with pytest.raises(LandscapeError, match="cannot exceed"):
        lanczos(Op(), iters=11)
    with pytest.raises(LandscapeError, match="reorth must be one of"):
        lanczos(Op(), iters=2, reorth="partial")
    with pytest.raises(LandscapeError, match="lacks dim, dtype, device"):
        lanczos(lambda V: V, iters=2)


def test_float32_basis_stays_orthonormal_at_a_million_dims():
    """Plain float32 reorthogonalization coefficients at 1e6 dims left ‖QᵀQ − I‖ = 4e-4 and λmax off by
    1.8e-3; the float64 piece sums keep both near float32 rounding."""
    d = 0.01 * torch.randn(10**6, generator=torch.Generator().manual_seed(0))
    d[:5] = torch.tensor([130.0, 120.0, 110.0, 100.0, 90.0])
    res = lanczos(as_operator(lambda V: d[:, None] * V, 10**6), iters=30, vectors=2, keep_basis=True)
    for p in range(2):
        B = res.basis[p].double()
        assert (B @ B.T - torch.eye(30, dtype=D)).abs().max() < 1e-5
    np.testing.assert_allclose(res.ritz()[0].max(1), 130.0, atol=1e-4)
