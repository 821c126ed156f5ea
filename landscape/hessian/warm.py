"""Top eigenpairs of a symmetric operator started from given vectors: the warm start of a curvature monitor.

`warm_eigenpairs(op, k, init)` runs a block Krylov iteration with Rayleigh-Ritz on the kept basis Q and A·Q
(no extra products for Ritz values and residuals r = A u − θ u); each data pass adds the residuals of the
unconverged wanted Ritz pairs (the block Lanczos / Davidson direction); a full basis restarts from the best
k + b Ritz vectors. Inner products and the two Gram-Schmidt passes accumulate in float64 (a slab of rows at a
time), so a float32 basis stays orthonormal at any dimension. It stops when every wanted pair has
‖r‖ ≤ tol·|θ₁|, which bounds each eigenvalue's error by ‖r‖ (docs/methods.md §G.2). Started from the
previous measurement's Ritz vectors, it needs fewer products when the eigenvectors moved little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError


@dataclass
class TrackedPairs:
    """Top eigenpairs from `warm_eigenpairs`: eigenvalues [k] (descending), eigenvectors [dim, k],
    residual norms ‖A u − θ u‖ [k], convergence flag, vectors applied."""

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray
    converged: bool
    n_products: int


def _gram(A: Tensor, B: Tensor) -> Tensor:
    """Aᵀ B accumulated in float64, a slab of rows at a time (no full float64 copy of a tall A)."""
    rows = max(1, 2**22 // max(1, A.shape[1] + B.shape[1]))
    out = torch.zeros(A.shape[1], B.shape[1], dtype=torch.float64, device=A.device)
    for a, b in zip(A.split(rows), B.split(rows)):
        out += a.double().T @ b.double()
    return out


def _orth(X: Tensor, Q: Tensor | None) -> Tensor:
    """Orthonormal columns spanning X minus its component in span(Q): block classical Gram-Schmidt
    twice with float64 inner products, then a float64 QR; columns that vanish (already in the span)
    are dropped. Returned in X's dtype."""
    dtype = X.dtype
    X = X.double()
    norms = torch.linalg.vector_norm(X, dim=0)
    for _ in range(2):
        if Q is not None and Q.shape[1]:
            X = X - _slab_mul(Q, _gram(Q, X))
        X, R = torch.linalg.qr(X)
        keep = R.diagonal().abs() > 1e-6 * norms.clamp_min(1e-300)
        X, norms = X[:, keep], torch.ones(int(keep.sum()), dtype=X.dtype, device=X.device)
    return X.to(dtype)


def _slab_mul(Q: Tensor, C: Tensor) -> Tensor:
    """Q @ C in float64 a slab of rows at a time."""
    rows = max(1, 2**22 // max(1, Q.shape[1]))
    return torch.cat([q.double() @ C for q in Q.split(rows)])


def warm_eigenpairs(op: Any, k: int, init: Tensor | None = None, *, tol: float = 1e-3, max_matmats: int = 40,
                    block_size: int | None = None, max_basis: int | None = None,
                    generator: torch.Generator | None = None) -> TrackedPairs:
    """The k algebraically largest eigenpairs of a symmetric operator, started from `init` [dim, ≤b].

    Block Krylov with Rayleigh-Ritz on the kept basis Q and A·Q: each data pass adds the residuals
    of the unconverged wanted Ritz pairs (the block Lanczos / Davidson direction); a full basis
    restarts from the best k + b Ritz vectors. Stops when every wanted ‖A u − θ u‖ ≤ tol·max|θ|
    (|θ − λ| is at most that residual). Missing start columns are random, drawn from `generator`.
    """
    dim, dtype, device = int(op.dim), op.dtype, op.device
    if not 1 <= k <= dim:
        raise LandscapeError(f"k must be in 1..{dim}, got {k}")
    b = min(dim, block_size or k)
    m_max = min(dim, max_basis or max(k + 3 * b, 10 * b))
    cols = [] if init is None else [init.to(device, dtype)[:, :b]]
    missing = b - (cols[0].shape[1] if cols else 0)
    if missing > 0:
        gen = generator or torch.Generator().manual_seed(0)
        cols.append(torch.randn(dim, missing, generator=gen, dtype=torch.float64).to(device, dtype))
    Q = _orth(torch.cat(cols, 1), None)
    AQ = op.matmat(Q)
    products, matmats = Q.shape[1], 1
    while True:
        H = _gram(Q, AQ).cpu()
        theta, Y = np.linalg.eigh(((H + H.T) / 2).numpy())
        order = np.argsort(-theta, kind="stable")[: min(Q.shape[1], k + b)]
        theta = theta[order]
        Yr = torch.from_numpy(np.ascontiguousarray(Y[:, order])).to(device, dtype)
        U, AU = Q @ Yr, AQ @ Yr
        R = AU - U * torch.from_numpy(theta).to(device, dtype)
        res = torch.linalg.vector_norm(R, dim=0).double().cpu().numpy()
        done = res <= tol * max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
        if done[:k].all() or matmats >= max_matmats or Q.shape[1] >= dim:
            break
        pick = [i for i in range(len(theta)) if not done[i]][:b]
        if Q.shape[1] + len(pick) > m_max:
            Q, AQ = U, AU
        X = _orth(R[:, pick], Q)
        if X.shape[1] == 0:
            break
        Q, AQ = torch.cat([Q, X], 1), torch.cat([AQ, op.matmat(X)], 1)
        products += X.shape[1]
        matmats += 1
    kk = min(k, len(theta))
    return TrackedPairs(theta[:kk], U[:, :kk], res[:kk], bool(done[:kk].all()), products)
