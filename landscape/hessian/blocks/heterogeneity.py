"""Block heterogeneity: how different the Hessian spectra of a model's parameter blocks are.

Zhang et al. 2024 ("Why Transformers Need Adam: A Hessian Perspective", NeurIPS 2024, §2-3) compare the SLQ
densities of a model's parameter blocks by the Jensen-Shannon distance of every pair, and summarize a model by
the average over pairs (their JS⁰ at initialization). This module computes that comparison on SLQ densities
(`SpectralDensity`, e.g. from `block_spectra`), with the smoothing and grid stated here (docs/methods.md §E.7):

    For a pair (a, b): lo = min(λmin_a, λmin_b), hi = max(λmax_a, λmax_b), span = hi − lo,
    σ = bandwidth · span, grid = n_grid equispaced points on [lo − 5σ, hi + 5σ];
    p_a(t) = Σ_i w_i N(t; θ_i, σ²) averaged over vectors (`SpectralDensity.density`), then discretized
    P_a[j] = p_a(t_j) / Σ_j p_a(t_j) (and P_b likewise), and

        JS(P_a, P_b) = ½ KL(P_a ‖ M) + ½ KL(P_b ‖ M),   M = ½ (P_a + P_b),   natural logarithm,
        JS distance  = √JS  ∈ [0, √ln 2]     (0 for equal densities, √ln 2 ≈ 0.8326 for disjoint supports)

The grid is the pair's own, so a pair's distance depends on those two blocks only, and σ ∝ span makes it
invariant to rescaling the Hessian. scale="own" divides each block's nodes by its own max |θ| first: the
distance then compares the shapes of the spectra, not their scales. `heterogeneity` is the mean distance over
all unordered pairs of distinct blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError
from landscape.hessian.solvers.spectrum import SpectralDensity

SCALES = (None, "own")
MAX_DISTANCE = math.sqrt(math.log(2))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (natural log) of two discrete distributions on the same support.

    Args:
        p: nonnegative weights (normalized here to sum 1).
        q: nonnegative weights of the same shape.

    Returns:
        ½ Σ p log(p/m) + ½ Σ q log(q/m) with m = (p + q)/2 and 0 log 0 = 0; in [0, ln 2].
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.size == 0:
        raise LandscapeError(f"js_divergence: the distributions differ in shape ({p.shape} vs {q.shape}) or are empty")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0 or not (np.isfinite(p).all()
                                                                              and np.isfinite(q).all()):
        raise LandscapeError("js_divergence: weights must be finite, nonnegative and not all zero")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        on = (x > 0) & (m > 0)   # a denormal x whose half underflows contributes nothing
        return float(np.sum(x[on] * np.log(x[on] / m[on])))

    return min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), math.log(2))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """√js_divergence(p, q): a metric on distributions, in [0, √ln 2].

    Args:
        p: a distribution on a grid.
        q: another on the same grid.

    Returns:
        The distance.
    """
    return math.sqrt(js_divergence(p, q))


def _rescaled(sd: SpectralDensity, scale: str | None) -> SpectralDensity:
    if scale is None:
        return sd
    top = float(np.abs(sd.nodes).max())
    return SpectralDensity(sd.nodes / top if top > 0 else sd.nodes, sd.weights, sd.dim)


def _support(sd: SpectralDensity) -> tuple[float, float]:
    """[min, max] of the nodes that carry weight (a node after a Lanczos breakdown has weight 0)."""
    live = sd.nodes[sd.weights > 0]
    return (float(live.min()), float(live.max())) if live.size else (sd.lambda_min, sd.lambda_max)


def pair_densities(a: SpectralDensity, b: SpectralDensity, bandwidth: float = 0.01, n_grid: int = 2048,
                   scale: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, P_a, P_b): the two smoothed densities on the pair's common grid, each summing to 1.

    Args:
        a: one block's SLQ density.
        b: another's.
        bandwidth: Gaussian σ as a fraction of the pair's eigenvalue span.
        n_grid: grid points.
        scale: None (eigenvalues as they are) or "own" (each block's nodes divided by its max |θ|).

    Returns:
        The grid and the discretized densities (module docstring).
    """
    if scale not in SCALES:
        raise LandscapeError(f"scale must be one of {SCALES}, got {scale!r}")
    if not (bandwidth > 0 and n_grid >= 16):
        raise LandscapeError(f"bandwidth must be positive and n_grid at least 16, got {bandwidth!r}, {n_grid!r}")
    a, b = _rescaled(a, scale), _rescaled(b, scale)
    (lo_a, hi_a), (lo_b, hi_b) = _support(a), _support(b)
    lo, hi = min(lo_a, lo_b), max(hi_a, hi_b)
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    sigma = bandwidth * span
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
    pa, pb = a.density(grid, sigma)[1], b.density(grid, sigma)[1]
    return grid, pa / pa.sum(), pb / pb.sum()


@dataclass
class Heterogeneity:
    """Pairwise JS distances between blocks: `names`, the symmetric `matrix` [B, B] (zero diagonal), the
    settings, and `mean` over the B(B−1)/2 pairs of distinct blocks."""

    names: list[str]
    matrix: np.ndarray
    bandwidth: float
    n_grid: int
    scale: str | None

    @property
    def mean(self) -> float:
        """The heterogeneity: the mean JS distance over the block pairs, mean_{a<b} D_ab (NaN for one block)."""
        n = len(self.names)
        return float(self.matrix[np.triu_indices(n, 1)].mean()) if n > 1 else float("nan")

    def to_dict(self) -> dict:
        """The matrix and its settings as JSON."""
        return {"names": self.names, "matrix": self.matrix.tolist(), "mean": self.mean, "bandwidth": self.bandwidth,
                "n_grid": self.n_grid, "scale": self.scale, "log": "natural", "distance": "sqrt(JS divergence)"}


def heterogeneity(spectra: Mapping[str, SpectralDensity], bandwidth: float = 0.01, n_grid: int = 2048,
                  scale: str | None = None) -> Heterogeneity:
    """The JS distance between every pair of block densities (module docstring) and their mean.

    Args:
        spectra: {block name: SpectralDensity} (e.g. `block_spectra(...).spectra`).
        bandwidth: Gaussian σ as a fraction of each pair's eigenvalue span.
        n_grid: grid points per pair.
        scale: None or "own" (compare shapes: each block's eigenvalues over its own max |θ|).

    Returns:
        A Heterogeneity; `.mean` is the model's block heterogeneity.
    """
    names = list(spectra)
    D = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            _, pa, pb = pair_densities(spectra[names[i]], spectra[names[j]], bandwidth, n_grid, scale)
            D[i, j] = D[j, i] = js_distance(pa, pb)
    return Heterogeneity(names, D, bandwidth, n_grid, scale)


def vector_halves(sd: SpectralDensity) -> tuple[SpectralDensity, SpectralDensity]:
    """The density from the first and from the second half of the vectors (for the estimator's own noise: the
    JS distance between the halves of one block is what two independent runs on the same block differ by).

    Args:
        sd: a density of at least two vectors.

    Returns:
        (first half's density, second half's).
    """
    k = sd.vectors
    if k < 2:
        raise LandscapeError("vector_halves: the density needs at least two vectors")
    h = k // 2
    return (SpectralDensity(sd.nodes[:h], sd.weights[:h], sd.dim),
            SpectralDensity(sd.nodes[h:2 * h], sd.weights[h:2 * h], sd.dim))
