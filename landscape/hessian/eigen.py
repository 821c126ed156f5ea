"""Extreme eigenpairs to a tolerance by restarted block Krylov iteration (thick restart, explicit A·Q).

The search basis Q (orthonormal, dim × m) is kept together with A·Q, so Rayleigh-Ritz is exact:
H = Qᵀ(AQ) is grown by one block per data pass, Ritz pairs (θ, u = Q y) and residuals
r = (AQ) y − θ u come without extra products. The next block is the residuals of the wanted,
unconverged Ritz pairs (orthogonalized: the same space block Lanczos would add); when the basis is full
it restarts from the best Ritz vectors (Q ← Q Y, AQ ← AQ Y; Wu & Simon's thick restart, Stathopoulos &
Saad's block variant). Stops when every wanted pair has ‖r‖ ≤ tol·max|θ|, which bounds the eigenvalue
error by the same amount (|θ − λ| ≤ ‖r‖ for a symmetric A).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError

WHICH = ("LA", "SA", "LM")


@dataclass
class Eigenpairs:
    """eigenvalues [k] (float64, in `which` order), eigenvectors [dim, k] (unit), residual norms [k]."""

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray
    converged: bool
    n_products: int

    def to_dict(self) -> dict:
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged,
            "n_products": self.n_products,
        }


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    key = {"LA": -theta, "SA": theta, "LM": -np.abs(theta)}[which]
    return np.argsort(key, kind="stable")


def _orth_block(X: Tensor, Q: Tensor, gen: torch.Generator) -> Tensor:
    """Columns of X made orthonormal and orthogonal to Q (two Gram-Schmidt passes); a column that
    vanishes (already in the span) is replaced by a random one."""
    tiny = torch.finfo(X.dtype).eps ** 0.75
    cols = []
    for i in range(X.shape[1]):
        x = X[:, i]
        for _attempt in range(3):
            ref = torch.linalg.vector_norm(x)
            for _ in range(2):
                for B in (Q, torch.stack(cols, 1) if cols else None):
                    if B is not None and B.shape[1]:
                        x = x - B @ (B.T @ x)
            nrm = torch.linalg.vector_norm(x)
            if nrm > tiny * ref and nrm > 0:
                cols.append(x / nrm)
                break
            x = torch.randn(X.shape[0], generator=gen, dtype=torch.float64).to(X)
        else:
            raise LandscapeError("top_eigenpairs: could not extend the search space (dimension exhausted)")
    return torch.stack(cols, 1)


def top_eigenpairs(
    op: Any,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_matmats: int = 500,
    seed: int = 0,
) -> Eigenpairs:
    """The k extreme eigenpairs of a symmetric operator (`.matmat`, `.dim`, `.dtype`, `.device`).

    which: "LA" largest, "SA" smallest (algebraic), "LM" largest magnitude. tol: relative residual
    (default 1e-6 in float64, 1e-4 in lower precision, where products carry ~1e-6 relative rounding).
    block_size: vectors per data pass (default max(k, 4)); max_basis: search-space size before a
    restart (default max(k + 3·block, 10·block)); max_matmats: data passes before giving up
    (`converged` False).
    """
    if which not in WHICH:
        raise LandscapeError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    dim, dtype, device = int(op.dim), op.dtype, op.device
    if not 1 <= k <= dim:
        raise LandscapeError(f"top_eigenpairs: k must be in 1..{dim}, got {k}")
    tol = tol if tol is not None else (1e-6 if dtype == torch.float64 else 1e-4)
    b = min(dim, block_size or max(k, 4))
    m_max = min(dim, max_basis or max(k + 3 * b, 10 * b))
    if m_max < min(dim, k + b):
        raise LandscapeError(f"top_eigenpairs: max_basis must be at least k + block_size = {k + b}")
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(dim, b, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    Q = _orth_block(X, X[:, :0], gen)
    AQ = op.matmat(Q)
    H = (Q.T @ AQ).double().cpu()
    products, matmats = b, 1
    while True:
        H = (H + H.T) / 2
        theta, Y = np.linalg.eigh(H.cpu().numpy())
        idx = _order(theta, which)
        idx = idx[: min(len(theta), max(k, min(k + b, m_max - b)))]
        Yr = torch.from_numpy(Y[:, idx]).to(device=device, dtype=dtype)
        U, AU = Q @ Yr, AQ @ Yr
        th = theta[idx]
        R = AU - U * torch.from_numpy(th).to(device=device, dtype=dtype)
        res = torch.linalg.vector_norm(R, dim=0, dtype=torch.float64).cpu().numpy()
        limit = tol * max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
        done = res <= limit
        if done[:k].all() or Q.shape[1] >= dim or matmats >= max_matmats:
            break
        pick = [i for i in range(len(idx)) if not done[i]][:b]
        if Q.shape[1] + len(pick) > m_max:
            Q, AQ = U, AU
            H = torch.diag(torch.from_numpy(th))
        X = _orth_block(R[:, pick], Q, gen)
        AX = op.matmat(X)
        C = (torch.cat([Q, X], 1).T @ AX).double().cpu()
        m = Q.shape[1]
        H = torch.cat([torch.cat([H, C[:m].T], 0), C], 1)
        Q, AQ = torch.cat([Q, X], 1), torch.cat([AQ, AX], 1)
        products += X.shape[1]
        matmats += 1
    return Eigenpairs(th[:k], U[:, :k], res[:k], bool(done[:k].all()), products)
