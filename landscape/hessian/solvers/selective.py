"""Selective orthogonalization without a stored basis: converged Ritz vectors rebuilt by replaying the chain.

Paige (1971): in floating point a Lanczos chain loses orthogonality only in the directions of Ritz vectors
that have converged, q_{j+1}ᵀ y_i ≈ ε‖A‖ / (β_j |s_{j,i}|), where β_j |s_{j,i}| = ρ_i bounds ‖A y_i − θ_i y_i‖.
Parlett & Scott (1979) keep the chain semi-orthogonal (|q_{j+1}ᵀ y| ≤ √ε) by projecting every new Lanczos
vector against the Ritz vectors with ρ_i ≤ √ε ‖T_j‖. Forming y_i = Q_j s_i needs the basis Q_j; instead:

1. after each step, the eigenpairs of every chain's T_j (j × j, float64) give ρ_i (cheap);
2. the first time some ρ_i ≤ √ε ‖T_j‖ (at step J), every chain is replayed from its start vector with the
   recorded α, β (J − 1 more products per chain, allowed only while J ≤ REGEN_SHARE · iters) and accumulates
   Y_p = Q_J S_p, S_p the Ritz vectors of T_J with ρ ≤ ε^{1/4} ‖T_J‖, most converged first, at most r;
3. Y_p is orthonormalized (Löwdin, so each row stays next to its Ritz vector), the current q_J and q_{J−1}
   are projected against it, and so is every later w.

Projecting against any vector of span(Q_J) leaves the exact-arithmetic run unchanged (q_{j+1} ⊥ Q_J for
j ≥ J), so the α, β are those of a run with a semi-orthogonal basis for the values converged by step J.
Values that converge after J grow ghost copies that ghosts.py merges. One replay per run keeps the cost
bounded: at most REGEN_SHARE of the run's products, recorded as `regenerated`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from landscape.hessian.solvers.ghosts import C_TOL
from landscape.hessian.solvers.linalg import gram, project_out_

REGEN_SHARE = 0.5
"""The replay runs only if it costs at most this fraction of the run's products."""


def converged_ritz(alpha: np.ndarray, beta: np.ndarray, last_beta: float, eps: float,
                   known: np.ndarray, radius: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Whether one chain's T has a newly converged Ritz value, and the Ritz vectors to rebuild.

    Args:
        alpha: T_J's diagonal [J].
        beta: its off-diagonal [J − 1].
        last_beta: β_J, the norm of the next residual.
        eps: unit roundoff of the products.
        known: Ritz values whose vectors the chain already keeps.
        radius: how far each known value may have moved since (its ρ when it was rebuilt).

    Returns:
        (some value not in `known` has ρ ≤ √ε‖T‖, coefficients S [J, n] of the values not in `known` with
        ρ ≤ ε^{1/4}‖T‖ (most converged first), their Ritz values [n], their ρ [n]).
    """
    if alpha.size == 1:
        theta, S = alpha.copy(), np.ones((1, 1))
    else:
        theta, S = eigh_tridiagonal(alpha, beta)
    norm = max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
    rho = abs(float(last_beta)) * np.abs(S[-1])
    new = np.ones(theta.size, dtype=bool)
    for value, r in zip(known, radius):
        new &= np.abs(theta - value) > r + C_TOL * eps * norm
    pick = np.flatnonzero(new & (rho <= eps**0.25 * norm))
    pick = pick[np.argsort(rho[pick], kind="stable")]
    return bool((new & (rho <= math.sqrt(eps) * norm)).any()), S[:, pick], theta[pick], rho[pick]


def lowdin_(Y: Tensor) -> Tensor:
    """Rows made orthonormal in place by Y ← G^{−1/2} Y (G = Y Yᵀ in float64, Löwdin), which moves each row the
    least; rows in a numerically dependent direction become zero.

    Args:
        Y: [n, dim].

    Returns:
        Y.
    """
    if Y.shape[0] == 0:
        return Y
    g, W = torch.linalg.eigh(gram(Y, Y))
    keep = g > 1e-10 * g.max()
    M = ((W[:, keep] / g[keep].sqrt()) @ W[:, keep].T).to(device=Y.device, dtype=Y.dtype)
    for s in range(0, Y.shape[1], 1 << 16):  # in column spans: no temporary of Y's size
        Y[:, s : s + (1 << 16)] = M @ Y[:, s : s + (1 << 16)]
    return Y


class Selective:
    """The Ritz vectors a run orthogonalizes against, and when each was built.

    Attributes:
        Y: [k, r, dim] Ritz vectors per chain, orthonormal, filled in order (zero rows unused); None before
            the first replay.
        values: [k, r] their Ritz values (nan for unused rows).
        radius: [k, r] their ρ when rebuilt.
        since: [k, r] the step from which each row is projected out (a large number for unused rows).
        regenerated: products spent replaying; closed: no replay will run any more (the next one would pass
            REGEN_SHARE of the run's products, or every row is used).
    """

    STATE_KEYS = ("ritz_vectors", "ritz_values", "ritz_radius", "ritz_since", "regenerated", "closed")

    def __init__(self, rows: int, eps: float, iters: int, k: int):
        self.rows, self.eps, self.iters = rows, eps, iters
        self.Y: Tensor | None = None
        self.values = np.full((k, rows), np.nan)
        self.radius = np.zeros((k, rows))
        self.since = np.full((k, rows), np.iinfo(np.int64).max)
        self.regenerated, self.closed = 0, False

    def used(self, step: int | None = None) -> np.ndarray:
        """Rows in use per chain.

        Args:
            step: count only rows projected out at this step (None: all built so far).

        Returns:
            [k] counts.
        """
        if step is None:
            return np.isfinite(self.values).sum(1)
        return (self.since <= step).sum(1)

    def project(self, w: Tensor, step: int) -> None:
        """w_p ← w_p minus its components on chain p's rows in use at `step`, in place.

        Args:
            w: [k, dim] vectors of the k chains.
            step: the Lanczos step they belong to.
        """
        if self.Y is None:
            return
        for p, n in enumerate(self.used(step)):
            if n:
                project_out_(w[p : p + 1], self.Y[p : p + 1, :n])

    def after_step(self, run, j: int) -> None:
        """After step j: rebuild and apply new Ritz vectors when some chain has a new converged value.

        Args:
            run: the lanczos._Run (its α, β, q, q_prev and replay).
            j: the step just done.
        """
        if self.closed:
            return
        alpha, beta = torch.stack(run.alphas, 1).numpy(), torch.stack(run.betas, 1).numpy()
        used = self.used()
        found = [converged_ritz(alpha[p], beta[p, :-1], beta[p, -1], self.eps, self.values[p, : used[p]],
                                self.radius[p, : used[p]]) for p in range(run.k)]
        if not any(f[0] and used[p] < self.rows for p, f in enumerate(found)):
            return
        J = j + 1
        if (self.regenerated // run.k + J - 1) > REGEN_SHARE * self.iters:
            self.closed = True
            return
        if self.Y is None:
            self.Y = torch.zeros(run.k, self.rows, run.dim, dtype=run.wd, device=run.device)
        coeffs = [f[1][:, : self.rows - used[p]] for p, f in enumerate(found)]
        run.replay(coeffs, used)
        for p, f in enumerate(found):
            new = slice(used[p], used[p] + coeffs[p].shape[1])
            project_out_(self.Y[p, new], self.Y[p : p + 1, : used[p]].expand(self.Y[p, new].shape[0], -1, -1))
            lowdin_(self.Y[p, new])
            self.values[p, new], self.radius[p, new], self.since[p, new] = f[2][: coeffs[p].shape[1]], f[3][
                : coeffs[p].shape[1]], J
        self.regenerated += (J - 1) * run.k
        self.closed = bool((self.used() >= self.rows).all())
        self.project(run.q, J)
        self.project(run.q_prev, J)

    def state(self) -> dict:
        """The checkpoint fields.

        Returns:
            CPU tensors and ints under STATE_KEYS.
        """
        Y = self.Y.to("cpu", copy=True) if self.Y is not None else torch.zeros(0, 0, 0)
        return {"ritz_vectors": Y, "ritz_values": torch.from_numpy(self.values.copy()),
                "ritz_radius": torch.from_numpy(self.radius.copy()), "ritz_since": torch.from_numpy(self.since.copy()),
                "regenerated": self.regenerated, "closed": self.closed}

    def restore(self, state: dict, device: torch.device, dtype: torch.dtype) -> None:
        """Continue from the checkpoint fields.

        Args:
            state: a dict holding STATE_KEYS.
            device: where the rows go.
            dtype: the working dtype.
        """
        self.regenerated, self.closed = int(state["regenerated"]), bool(state["closed"])
        self.values = state["ritz_values"].numpy().copy()
        self.radius = state["ritz_radius"].numpy().copy()
        self.since = state["ritz_since"].numpy().copy()
        if state["ritz_vectors"].numel():
            self.Y = state["ritz_vectors"].to(device=device, dtype=dtype)
