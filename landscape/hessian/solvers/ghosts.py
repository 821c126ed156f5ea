"""Ghost eigenvalues of a Lanczos run without full reorthogonalization: found from T alone and merged away.

In floating point, once a Ritz value θ has converged the Lanczos vectors lose orthogonality in the direction
of its Ritz vector (Paige 1971), and T_m grows further copies of θ ("ghosts"). In the quadrature the copies
split θ's weight between them (Greenbaum 1989: the run is an exact Lanczos run of a nearby matrix whose
eigenvalues sit in tiny clusters around A's), so the density is right, but a count of Ritz values above a
threshold or a list of the top Ritz values counts θ several times. Per chain, with θ_i, s_i the eigenpairs of
T_m and β_m the final residual norm (so ‖A y_i − θ_i y_i‖ ≈ ρ_i = β_m |s_{m,i}|):

    converged      ρ_i ≤ √ε ‖T‖                                   (Parlett & Scott 1979)
    copies         neighbours θ_i, θ_l within C m ε max(|θ_i|, |θ_l|), or within τ min(ρ_i, ρ_l) when both
                   converged (single linkage), in a cluster holding a converged value
    spurious       θ_i not converged, within ρ_i of a converged cluster, an eigenvalue of T̂ (T without its first
                   row and column) to C ε ‖T‖, and of weight below √ε times the cluster's: its first component
                   is ~0 (Cullum & Willoughby 1985)

Each cluster of copies keeps the node of largest weight, which takes the whole cluster's weight; spurious
nodes give their (tiny) weight to the nearest kept node. Merged nodes stay in place with weight 0, so the
arrays keep their [vectors, iters] shape and every integral against the measure is unchanged to within the
link distance per unit weight. ε is the unit roundoff of the working precision, m the chain's length.

The two link distances. Greenbaum (1989): a run of m steps behaves like exact Lanczos on a matrix whose
eigenvalues are spread into clusters of width ~ m ε ‖A‖, and copies were measured up to 34 m ε |θ| apart
(float64, m = 100; float32: 3 m ε |θ|), hence C m ε |θ| with C = 50, relative to the value itself because a
narrow bulk under a large outlier holds distinct float32 Ritz values only 10 ε ‖T‖ apart (they stay distinct
at 50 m ε |θ| ≪ 10 ε ‖T‖ there). And τ min(ρ): two Ritz values closer than 1% of their residual bounds cannot
both have converged to distinct eigenvalues (Kato-Temple: |θ − λ| ≤ ρ²/δ with δ the gap, here ≥ 10⁴ δ), while
neighbouring bulk values were measured ≥ 25% of ρ apart. Copies of near-zero eigenvalues may stay unmerged;
they still split one weight between them, so the density is right.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh_tridiagonal

C_TOL = 50
"""Multiples of m ε |θ| within which two converged copies count as one value (module docstring)."""
TAU = 1e-2
"""The fraction of the smaller residual bound within which two converged Ritz values are copies."""


def _eig(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if alpha.size == 1:
        return alpha.copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta)


def _clusters(theta: np.ndarray, rho: np.ndarray, converged: np.ndarray, rel: float) -> np.ndarray:
    """Cluster label per node: single linkage of neighbours (theta ascending) within rel·|θ|, or within τ·ρ when
    both have converged."""
    labels = np.zeros(theta.size, dtype=int)
    for i in range(1, theta.size):
        gap, near = theta[i] - theta[i - 1], rel * max(abs(theta[i]), abs(theta[i - 1]))
        both = converged[i] and converged[i - 1]
        linked = gap <= near or (both and gap <= TAU * min(rho[i], rho[i - 1]))
        labels[i] = labels[i - 1] + (0 if linked else 1)
    return labels


def merge_ghosts(alpha: np.ndarray, beta: np.ndarray, last_beta: float, eps: float) -> tuple[np.ndarray, ...]:
    """Nodes and weights of one chain with its ghosts merged (see the module docstring).

    Args:
        alpha: T's diagonal [m] (float64).
        beta: T's off-diagonal [m − 1].
        last_beta: the final residual norm β_m (‖A q_m − α_m q_m − β_{m−1} q_{m−1}‖ after reorthogonalization).
        eps: unit roundoff of the products.

    Returns:
        (nodes [m] ascending, weights [m] summing to 1 with ghosts at 0, ghost mask [m] bool).
    """
    theta, S = _eig(np.asarray(alpha, np.float64), np.asarray(beta, np.float64))
    weights = S[0] ** 2
    ghost = np.zeros(theta.size, dtype=bool)
    if theta.size < 2:
        return theta, weights, ghost
    norm = max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
    rho = abs(float(last_beta)) * np.abs(S[-1])
    slack = C_TOL * eps * norm
    converged = rho <= eps**0.5 * norm
    labels = _clusters(theta, rho, converged, C_TOL * theta.size * eps)
    merged = weights.copy()
    for label in range(labels.max() + 1):
        members = np.flatnonzero(labels == label)
        if members.size < 2 or not converged[members].any():
            continue
        keep = members[np.argmax(weights[members])]
        merged[members] = 0.0
        merged[keep] = weights[members].sum()
        ghost[members[members != keep]] = True
    kept = np.flatnonzero(converged & ~ghost)
    if kept.size:
        mu = eigh_tridiagonal(alpha[1:], beta[1:], eigvals_only=True) if theta.size > 2 else alpha[1:]
        for i in np.flatnonzero(~converged):
            near = kept[np.argmin(np.abs(theta[kept] - theta[i]))]
            if (abs(theta[i] - theta[near]) <= rho[i] and np.abs(mu - theta[i]).min() <= slack
                    and weights[i] <= eps**0.5 * merged[near]):
                merged[near] += merged[i]
                merged[i] = 0.0
                ghost[i] = True
    return theta, merged, ghost
