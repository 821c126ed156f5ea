"""The spectral density of stochastic Lanczos quadrature (SLQ) and its summary statistics (slq.py computes it).

For a unit vector v, vᵀ f(A) v = Σ_i w_i f(θ_i) with Ritz values θ_i (the nodes) and weights
w_i = (first component of T's i-th eigenvector)² (Golub & Meurant; Lin, Saad & Yang 2016). Averaged
over k random vectors this is the spectral measure μ = (1/dim) Σ_j δ(λ_j) seen through k·m weighted nodes:

    density(t) = (1/k) Σ_vectors Σ_i w_i N(t; θ_i, σ²)                 (linear grid; plotted with a
                                                                       log y-axis by Ghorbani et al. 2019)
    density over u = log10|λ|, positive and negative parts separately (log-x plots, Papyan 2020)
    trace ≈ dim · (1/k) Σ_vectors Σ_i w_i θ_i
    negative mass = μ(λ < −ε·λmax), degenerate (near-zero) mass = μ(|λ| < ε·λmax)  (docs/methods.md §A.2)

Every number is an average over the k vectors of that vector's own quadrature estimate, so its vector
noise is sd/√k over them (`*_stderr`), reported from MIN_STDERR_VECTORS = 3 vectors on: with 2 the sample
sd has one degree of freedom and falls below a tenth of the true sd 8% of the time (χ²₁), so it is nan.
Scale-free degeneracy measures beside the λmax-relative
one: mass below absolute thresholds, mass below ε·median|λ| (the bulk's own scale) and the effective
rank dim·S·exp(−T/S), S = ∫|λ|dμ, T = ∫|λ|log|λ|dμ (Roy & Vetterli 2007), docs/methods.md §E.3-E.5.
With top_k, the top eigenpairs are refined from the same Krylov run and λmax gets its data-noise
stderr from per-batch Rayleigh quotients (landscape.hessian.solvers.errorbars).

Default broadening: σ² = 1e-5 · max(1, λmax − λmin), the default of PyHessian's density plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.hessian.solvers.eigen import Eigenpairs
from landscape.hessian.solvers.summary import summarize

NOISY = 0.05
"""λmax's data stderr above this fraction of λmax: too few samples."""
MIN_STDERR_VECTORS = 3
"""Vector-noise standard errors need at least this many vectors (two give one degree of freedom)."""


def _gauss(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (np.exp(-0.5 * z**2) @ weights) / (sigma * math.sqrt(2 * math.pi))


@dataclass
class SpectralDensity:
    """The SLQ estimate of μ = (1/dim) Σ_j δ(λ_j): per vector v, the Gauss rule vᵀf(A)v ≈ Σ_i w_i f(θ_i).

    Attributes:
        nodes: [k, m] Ritz values θ per vector.
        weights: [k, m] quadrature weights w (each row sums to 1; merged ghost copies carry 0).
        dim: the matrix size.
        meta: how the run went (seed, reorth, memory plan, seconds, ...).
        top: refined top eigenpairs, when asked for.
        lambda_max_noise: {"value", "stderr", "batches"} of λmax's data noise, when measured.
    """

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    meta: dict = field(default_factory=dict)
    top: Eigenpairs | None = None
    lambda_max_noise: dict | None = None

    @property
    def vectors(self) -> int:
        """Random vectors k."""
        return self.nodes.shape[0]

    @property
    def lambda_max(self) -> float:
        """Largest Ritz value, or the refined top eigenvalue when larger (both are Rayleigh quotients,
        lower bounds on λmax)."""
        best = float(self.nodes.max())
        if self.top is not None and len(self.top.eigenvalues):
            best = max(best, float(self.top.eigenvalues[0]))
        return best

    @property
    def lambda_min(self) -> float:
        """Smallest Ritz value (an upper bound on λmin)."""
        return float(self.nodes.min())

    @property
    def scale(self) -> float:
        """λmax for ε-thresholds (max |λ| when no eigenvalue is positive)."""
        return self.lambda_max if self.lambda_max > 0 else float(np.abs(self.nodes).max())

    def _per_vector(self, values: np.ndarray) -> np.ndarray:
        return (self.weights * values).sum(axis=1)

    def _stderr(self, per_vector: np.ndarray) -> float:
        """sd/√k of per-vector estimates (nan with one vector)."""
        if self.vectors < MIN_STDERR_VECTORS:
            return float("nan")
        return float(np.std(per_vector, ddof=1) / math.sqrt(self.vectors))

    @property
    def trace(self) -> float:
        """dim · mean over vectors of Σ w θ (each vector's vᵀAv)."""
        return float(self.dim * self._per_vector(self.nodes).mean())

    @property
    def trace_stderr(self) -> float:
        """Standard error of `trace` over vectors (nan with one vector)."""
        return self.dim * self._stderr(self._per_vector(self.nodes))

    def mass(self, lo: float = -math.inf, hi: float = math.inf) -> float:
        """μ([lo, hi)) = mean over vectors of Σ_i w_i [lo ≤ θ_i < hi].

        Args:
            lo: lower end (included).
            hi: upper end (excluded).

        Returns:
            The mass in [0, 1].
        """
        return float(self._per_vector((self.nodes >= lo) & (self.nodes < hi)).mean())

    def _ratio(self, inside: np.ndarray) -> tuple[float, float]:
        per = self._per_vector(inside)
        return float(per.mean()), self._stderr(per)

    def negative_ratio(self, eps: float = 1e-3) -> float:
        """μ(λ < −ε·λmax).

        Args:
            eps: the threshold relative to λmax.

        Returns:
            The mass.
        """
        return self.mass(hi=-eps * self.scale)

    def negative_ratio_stderr(self, eps: float = 1e-3) -> float:
        """sd/√k over vectors of `negative_ratio` (nan below MIN_STDERR_VECTORS vectors).

        Args:
            eps: the threshold relative to λmax.

        Returns:
            The standard error.
        """
        return self._ratio(self.nodes < -eps * self.scale)[1]

    def degenerate_ratio(self, eps: float = 1e-3) -> float:
        """μ(|λ| < ε·λmax): the near-zero (degenerate) fraction of the spectrum.

        Args:
            eps: the threshold relative to λmax.

        Returns:
            The mass.
        """
        return self._ratio(np.abs(self.nodes) < eps * self.scale)[0]

    def degenerate_ratio_stderr(self, eps: float = 1e-3) -> float:
        """sd/√k over vectors of `degenerate_ratio` (nan below MIN_STDERR_VECTORS vectors).

        Args:
            eps: the threshold relative to λmax.

        Returns:
            The standard error.
        """
        return self._ratio(np.abs(self.nodes) < eps * self.scale)[1]

    def _cdf_bounds(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Per vector, bounds on F(t⁻) = μ((−∞, t)) from the Chebyshev-Markov-Stieltjes inequalities of
        Gauss quadrature: Σ_{θ_i < θ_j} w_i ≤ F(θ_j⁻) and F(θ_j) ≤ Σ_{θ_i ≤ θ_j} w_i for every node θ_j
        (Akhiezer 1965; Golub & Meurant 2010, §6.1). So F(t⁻) lies between the nodes' mass below t less the
        weight of the last node below t, and that mass plus the weight of the first node at or above t."""
        below = self.nodes < t
        mass = self._per_vector(below)
        masked_lo = np.where(below, self.nodes, -np.inf)
        masked_hi = np.where(~below, self.nodes, np.inf)
        rows = np.arange(self.vectors)
        last = np.where(below.any(axis=1), self.weights[rows, masked_lo.argmax(axis=1)], 0.0)
        first = np.where((~below).any(axis=1), self.weights[rows, masked_hi.argmin(axis=1)], 0.0)
        return mass - last, mass + first

    def mass_bounds(self, lo: float, hi: float) -> tuple[float, float]:
        """(lower, upper) bounds on μ([lo, hi)) that the quadrature can guarantee (`_cdf_bounds`), averaged
        over vectors. The point estimates (`mass`, `degenerate_ratio`, ...) lie inside; a wide bracket says
        the Krylov run has too few nodes near the thresholds to resolve the mass (e.g. a near-zero cluster
        holding most of the spectrum is represented by a few nodes at its centre, so the mass below a
        threshold inside the cluster reads 0 with a bracket [0, cluster mass]). Exact in exact arithmetic;
        with the loss of orthogonality of a long unreorthogonalized run it holds approximately.

        Args:
            lo: lower end of the interval.
            hi: upper end.

        Returns:
            (lower bound, upper bound).
        """
        f_hi_low, f_hi_up = self._cdf_bounds(hi)
        f_lo_low, f_lo_up = self._cdf_bounds(lo)
        low = np.clip(f_hi_low - f_lo_up, 0.0, 1.0)
        up = np.clip(f_hi_up - f_lo_low, 0.0, 1.0)
        return float(low.mean()), float(up.mean())

    def mass_below(self, threshold: float) -> tuple[float, float]:
        """μ(|λ| < threshold): an absolute, λmax-free degeneracy measure.

        Args:
            threshold: the absolute threshold.

        Returns:
            (mass, stderr over vectors).
        """
        return self._ratio(np.abs(self.nodes) < threshold)

    def median_abs(self) -> float:
        """The median of |λ| under the spectral measure (weighted median of all vectors' nodes).

        Returns:
            median |λ|.
        """
        a = np.abs(self.nodes).ravel()
        order = np.argsort(a, kind="stable")
        cdf = np.cumsum(self.weights.ravel()[order]) / self.vectors
        return float(a[order][min(int(np.searchsorted(cdf, 0.5)), a.size - 1)])

    def bulk_degenerate_ratio(self, eps: float = 1e-2) -> tuple[float, float]:
        """μ(|λ| < ε·median|λ|): near-zero mass relative to the bulk's own scale, blind to outliers (the
        threshold's own noise is not in the stderr).

        Args:
            eps: the threshold relative to median|λ|.

        Returns:
            (mass, stderr over vectors).
        """
        return self._ratio(np.abs(self.nodes) < eps * self.median_abs())

    def effective_rank(self) -> tuple[float, float]:
        """(effective rank, jackknife stderr over vectors): exp of the entropy of |λ_i| / Σ|λ_j|, i.e.
        dim·S·exp(−T/S) with S = ∫|λ|dμ, T = ∫|λ| log|λ| dμ (Roy & Vetterli 2007). Between 1 and dim,
        invariant to scaling the matrix, no threshold.

        Returns:
            (effective rank, its jackknife stderr; nan below MIN_STDERR_VECTORS vectors).
        """
        a = np.abs(self.nodes)
        S = self._per_vector(a)
        T = self._per_vector(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0))

        def erank(s: float, t: float) -> float:
            return float(self.dim * s * math.exp(-t / s)) if s > 0 else 0.0

        value = erank(S.mean(), T.mean())
        k = self.vectors
        if k < MIN_STDERR_VECTORS:
            return value, float("nan")
        loo = np.array([erank((S.sum() - S[i]) / (k - 1), (T.sum() - T[i]) / (k - 1)) for i in range(k)])
        return value, float(math.sqrt((k - 1) / k * ((loo - loo.mean()) ** 2).sum()))

    def outliers(self, ratio: float = 0.1) -> int:
        """Eigenvalues above ratio·λmax, counted as converged Ritz values: the median over vectors of how many
        nodes that carry weight exceed ratio·λmax (isolated top eigenvalues appear once in every vector; merged
        ghost copies carry none).

        Args:
            ratio: the threshold relative to λmax.

        Returns:
            The count.
        """
        return int(np.median(((self.nodes > ratio * self.scale) & (self.weights > 0)).sum(axis=1)))

    @property
    def lambda_max_stderr(self) -> float:
        """Data-noise stderr of λmax (per-batch Rayleigh quotients of the top Ritz vector; nan if unknown)."""
        return float(self.lambda_max_noise["stderr"]) if self.lambda_max_noise else float("nan")

    @property
    def lambda_max_noisy(self) -> bool:
        """λmax's data stderr exceeds 5% of |λmax|: the estimate rests on too few samples."""
        se = self.lambda_max_stderr
        return bool(math.isfinite(se) and se > NOISY * abs(self.lambda_max))

    def default_sigma(self) -> float:
        """σ = √(1e-5 · max(1, λmax − λmin)), PyHessian's density broadening."""
        return math.sqrt(1e-5 * max(1.0, self.lambda_max - self.lambda_min))

    def density(
        self, grid: np.ndarray | None = None, sigma: float | None = None, n_grid: int = 1000
    ) -> tuple[np.ndarray, np.ndarray]:
        """The density (1/k) Σ_vectors Σ_i w_i N(t; θ_i, σ²) on a grid.

        Args:
            grid: where to evaluate (default: n_grid points over [λmin − 5σ, λmax + 5σ], where it integrates to 1).
            sigma: Gaussian broadening (default `default_sigma`).
            n_grid: points of the default grid.

        Returns:
            (grid, density).
        """
        sigma = sigma or self.default_sigma()
        if grid is None:
            grid = np.linspace(self.lambda_min - 5 * sigma, self.lambda_max + 5 * sigma, n_grid)
        grid = np.asarray(grid, dtype=np.float64)
        return grid, _gauss(grid, self.nodes.ravel(), self.weights.ravel() / self.vectors, sigma)

    def log_density(
        self, grid: np.ndarray | None = None, sigma: float = 0.05, n_grid: int = 500, floor: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u grid, positive part, negative part): densities over u = log10|λ| of the eigenvalues above 0
        and below 0, broadened by σ in u. Nodes with |λ| ≤ floor are left out, so ∫pos + ∫neg = 1 − μ(|λ| ≤ floor).

        Args:
            grid: u values (default: n_grid points over the nodes' range ± 5σ).
            sigma: broadening in u.
            n_grid: points of the default grid.
            floor: |λ| left out (default 1e-6·λmax).

        Returns:
            (u grid, density of the positive eigenvalues, density of the negative ones).
        """
        floor = floor if floor is not None else 1e-6 * self.scale
        nodes, w = self.nodes.ravel(), self.weights.ravel() / self.vectors
        keep = np.abs(nodes) > floor
        u = np.log10(np.abs(nodes[keep]))
        w = w[keep]
        pos = nodes[keep] > 0
        if grid is None:
            lo, hi = (u.min(), u.max()) if u.size else (0.0, 1.0)
            grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
        grid = np.asarray(grid, dtype=np.float64)
        return grid, _gauss(grid, u[pos], w[pos], sigma), _gauss(grid, u[~pos], w[~pos], sigma)

    def summary(
        self,
        eps: float = 1e-3,
        outlier_ratio: float = 0.1,
        thresholds: tuple[float, ...] = (1e-3, 1e-5),
        bulk_eps: float = 1e-2,
    ) -> dict[str, Any]:
        """Every number with its error bar: λmax (± data stderr, solver residual), λmin, trace, negative
        and degenerate ratios at ε·λmax (± vector stderr), mass below absolute `thresholds`, mass below
        bulk_eps·median|λ|, effective rank, outlier count, and the refined top-k when computed.

        Args:
            eps: ε of the λmax-relative masses.
            outlier_ratio: the `outliers` threshold.
            thresholds: absolute thresholds of `mass_below`.
            bulk_eps: ε of `bulk_degenerate_ratio`.

        Returns:
            A flat dict of numbers (nan where a number has no estimate, e.g. stderrs of 2 vectors).
        """
        return summarize(self, eps, outlier_ratio, thresholds, bulk_eps)

    def to_dict(self, eps: float = 1e-3, grid: np.ndarray | None = None, sigma: float | None = None) -> dict:
        """Summary, meta, the density on a grid, and nodes/weights as nested lists (JSON-able).

        Args:
            eps: the ε of the thresholded masses.
            grid: the density's grid (default as in `density`).
            sigma: its broadening.

        Returns:
            The dict spectrum.json is written from.
        """
        g, d = self.density(grid, sigma)
        return {
            **self.summary(eps),
            **self.meta,
            "sigma": sigma or self.default_sigma(),
            "grid": g.tolist(),
            "density": d.tolist(),
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
        }
