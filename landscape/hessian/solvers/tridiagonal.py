"""What a Lanczos run returns: the tridiagonal T of each chain, its Gauss quadrature, and Ritz seeds for top-k.

Per chain, T = tridiag(β, α, β) (m × m, float64). Its eigenpairs (θ_i, s_i) give the SLQ nodes θ_i and weights
w_i = s_{1,i}² (Golub & Meurant: vᵀ f(A) v ≈ Σ_i w_i f(θ_i) for the chain's unit start vector v), and the Ritz
vectors y_i = Q_m s_i with A y_i = θ_i y_i + β_m s_{m,i} q_{m+1} (the Lanczos relation), so a kept basis gives
Ritz vectors with their products and no matmat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from landscape.hessian.solvers.basis import BasisPlan
from landscape.hessian.solvers.ghosts import merge_ghosts


@dataclass
class LanczosResult:
    """The tridiagonal coefficients of k chains and what the run kept.

    Attributes:
        alpha: [k, m] diagonals (float64).
        beta: [k, m − 1] off-diagonals (float64); 0 marks a breakdown.
        last_beta: [k] the final residual norms β_m (A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ).
        reorth: how orthogonality was kept ("full", "selective", "none").
        eps: unit roundoff of the working dtype (the tolerance scale of ghost merging).
        eps_products: unit roundoff of the operator's dtype (products are no more accurate than that).
        breakdowns: breakdowns over all chains.
        basis: [k, m, dim] Lanczos vectors ("full" with keep_basis).
        residual: [k, dim] final unnormalized residuals β_m q_{m+1} ("full" with keep_basis).
        ritz_vectors: [k, r, dim] the Ritz vectors "selective" rebuilt (orthonormal per chain; zero rows unused).
        ritz_values: [k, r] their Rayleigh quotients (nan for unused rows).
        ritz_radius: [k, r] their residual bounds ρ when rebuilt.
        regenerated: matrix-vector products spent replaying chains ("selective").
        plan: the memory plan of the run.
    """

    alpha: np.ndarray
    beta: np.ndarray
    last_beta: np.ndarray
    reorth: str = "full"
    eps: float = 0.0
    eps_products: float = 0.0
    breakdowns: int = 0
    basis: Tensor | None = None
    residual: Tensor | None = None
    ritz_vectors: Tensor | None = None
    ritz_values: np.ndarray | None = None
    ritz_radius: np.ndarray | None = None
    regenerated: int = 0
    plan: BasisPlan | None = None

    @property
    def vectors(self) -> int:
        """Chains k."""
        return self.alpha.shape[0]

    @property
    def iters(self) -> int:
        """Steps m."""
        return self.alpha.shape[1]

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """SLQ nodes and weights per chain (Golub & Meurant's Gauss quadrature).

        Returns:
            (nodes [k, m], weights [k, m]): T's eigenvalues (ascending) and the squared first components of
            its eigenvectors; without full reorthogonalization ghost copies are merged (their weight 0).
        """
        if self.reorth == "full":
            pairs = [tridiag_to_ritz(a, b) for a, b in zip(self.alpha, self.beta)]
        else:
            pairs = [merge_ghosts(a, b, lb, self.eps)[:2] for a, b, lb in zip(self.alpha, self.beta, self.last_beta)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def top_ritz(self, count: int) -> tuple[np.ndarray, Tensor, Tensor | None]:
        """The `count` largest Ritz pairs over all chains, one per eigenvalue, to seed
        `top_eigenpairs(init=U.T, init_product=AU.T)`.

        Every chain converges to the same outliers, so a candidate whose value lies within ρ_a + ρ_b + 2u‖T‖
        of a better one already taken is the same eigenvector and is skipped (u: the products' unit roundoff).
        With a kept basis: U = Yᵀ Q per chain and A U = θ U + y_m · residual from the Lanczos relation (no
        matmat). With "selective": the rebuilt (converged) Ritz vectors that are among their chain's `count`
        largest Ritz values, and no products. Otherwise nothing.

        Args:
            count: how many.

        Returns:
            (values [n], U [n, dim], AU [n, dim] or None), n ≤ count.
        """
        if self.basis is not None and self.residual is not None:
            return _top_from_basis(self, count)
        if self.ritz_vectors is None or self.ritz_values is None:
            return np.zeros(0), torch.empty(0, 0), None
        slack = 2 * self.eps_products * _scale(self)
        # the kept vectors are the converged ones, wherever they lie (a chain often converges to an isolated λmin
        # first): only one among its chain's `count` largest Ritz values may seed the top eigenpairs
        nodes = self.ritz()[0]
        floor = [np.sort(row[np.isfinite(row)])[::-1][min(count, row.size) - 1] for row in nodes]
        cands = [(v, rho, p, i) for p, (vals, rads) in enumerate(zip(self.ritz_values, self.ritz_radius))
                 for i, (v, rho) in enumerate(zip(vals, rads)) if np.isfinite(v) and v + rho + slack >= floor[p]]
        chosen = _distinct(cands, count, slack)
        if not chosen:
            return np.zeros(0), torch.empty(0, 0), None
        U = torch.stack([self.ritz_vectors[c[2], c[3]] for c in chosen])
        return np.array([c[0] for c in chosen]), U, None


def _scale(res: LanczosResult) -> float:
    """max |α| + 2 max |β|, an upper bound on ‖T‖ over the chains."""
    beta = np.abs(res.beta).max() if res.beta.size else 0.0
    return float(np.abs(res.alpha).max() + 2 * beta)


def _distinct(cands: list[tuple], count: int, slack: float) -> list[tuple]:
    """The `count` largest candidates (θ, ρ, ...) whose values are pairwise more than ρ_a + ρ_b + slack apart,
    taken in decreasing θ."""
    chosen: list[tuple] = []
    for c in sorted(cands, key=lambda c: -c[0]):
        if all(abs(c[0] - k[0]) > c[1] + k[1] + slack for k in chosen):
            chosen.append(c)
            if len(chosen) == count:
                break
    return chosen


def _top_from_basis(res: LanczosResult, count: int) -> tuple[np.ndarray, Tensor, Tensor]:
    """top_ritz from a kept basis: the best distinct Ritz vectors over the chains and their products."""
    cands = []  # (θ, ρ, chain, Ritz vector in the chain's Lanczos basis)
    for p, (a, b) in enumerate(zip(res.alpha, res.beta)):
        theta, Y = (a.copy(), np.ones((1, 1))) if a.size == 1 else eigh_tridiagonal(a, b)
        rho = abs(float(res.last_beta[p])) * np.abs(Y[-1])
        cands += [(theta[i], rho[i], p, Y[:, i]) for i in range(len(theta) - 1, max(-1, len(theta) - 1 - count), -1)]
    chosen = _distinct(cands, count, 2 * res.eps_products * _scale(res))
    U, AU, values = [], [], []
    for p in sorted({c[2] for c in chosen}):
        mine = [c for c in chosen if c[2] == p]
        values += [c[0] for c in mine]
        Yp = torch.from_numpy(np.stack([c[3] for c in mine])).to(res.basis)
        th = torch.tensor([c[0] for c in mine], dtype=torch.float64).to(res.basis)
        Up = Yp @ res.basis[p]
        U.append(Up)
        AU.append(th[:, None] * Up + Yp[:, -1:] * res.residual[p].to(res.basis))
    return np.array(values), torch.cat(U), torch.cat(AU)


def tridiag_to_ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of one chain.

    Args:
        alpha: T's diagonal [m].
        beta: T's off-diagonal [m − 1].

    Returns:
        (eigenvalues of tridiag(beta, alpha, beta) ascending, squared first eigenvector components).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.size == 1:
        return alpha.copy(), np.ones(1)
    nodes, vecs = eigh_tridiagonal(alpha, np.asarray(beta, dtype=np.float64))
    return nodes, vecs[0] ** 2
