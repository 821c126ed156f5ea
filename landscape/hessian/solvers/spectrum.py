"""Eigenvalue density by stochastic Lanczos quadrature (SLQ), and its summary statistics.

For a unit vector v, vᵀ f(A) v = Σ_i w_i f(θ_i) with Ritz values θ_i (the nodes) and weights
w_i = (first component of T's i-th eigenvector)² (Golub & Meurant; Lin, Saad & Yang 2016). Averaged
over k random vectors this is the spectral measure μ = (1/dim) Σ_j δ(λ_j) seen through k·m weighted nodes:

    density(t) = (1/k) Σ_vectors Σ_i w_i N(t; θ_i, σ²)                 (linear grid; plotted with a
                                                                       log y-axis by Ghorbani et al. 2019)
    density over u = log10|λ|, positive and negative parts separately (log-x plots, Papyan 2020)
    trace ≈ dim · (1/k) Σ_vectors Σ_i w_i θ_i
    negative mass = μ(λ < −ε·λmax), degenerate (near-zero) mass = μ(|λ| < ε·λmax)  (docs/methods.md §A.2)

Every number is an average over the k vectors of that vector's own quadrature estimate, so its vector
(probe) noise is sd/√k over them (`*_stderr`). Scale-free degeneracy measures beside the λmax-relative
one: mass below absolute thresholds, mass below ε·median|λ| (the bulk's own scale) and the effective
rank dim·S·exp(−T/S), S = ∫|λ|dμ, T = ∫|λ|log|λ|dμ (Roy & Vetterli 2007), docs/methods.md §E.3-E.5.
With top_k, the top eigenpairs are refined from the same Krylov run and λmax gets its data-noise
stderr from per-batch Rayleigh quotients (landscape.hessian.solvers.errorbars).

Default broadening: σ² = 1e-5 · max(1, λmax − λmin), the default of PyHessian's density plot.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from landscape.hessian.solvers.chains import chains_per_group, grouped_lanczos
from landscape.hessian.solvers.eigen import Eigenpairs, top_eigenpairs
from landscape.hessian.solvers.errorbars import rayleigh_stderr
from landscape.hessian.solvers.lanczos import lanczos
from landscape.hessian.solvers.protocol import LinearOperator, check_operator, full_dim, over_shards

NOISY = 0.05  # λmax's data stderr above this fraction of λmax: too few samples


def _gauss(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (np.exp(-0.5 * z**2) @ weights) / (sigma * math.sqrt(2 * math.pi))


@dataclass
class SpectralDensity:
    """SLQ nodes and weights per vector (rows of [k, m]; each row's weights sum to 1) over a dim-sized matrix;
    `top`: refined top eigenpairs, `lambda_max_noise`: {"value", "stderr", "batches"} of λmax's data noise."""

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    meta: dict = field(default_factory=dict)
    top: Eigenpairs | None = None
    lambda_max_noise: dict | None = None

    @property
    def vectors(self) -> int:
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
        return float(self.nodes.min())

    @property
    def scale(self) -> float:
        """λmax for ε-thresholds (max |λ| when no eigenvalue is positive)."""
        return self.lambda_max if self.lambda_max > 0 else float(np.abs(self.nodes).max())

    def _per_vector(self, values: np.ndarray) -> np.ndarray:
        return (self.weights * values).sum(axis=1)

    def _stderr(self, per_vector: np.ndarray) -> float:
        """sd/√k of per-vector estimates (nan with one vector)."""
        if self.vectors < 2:
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
        """Spectral mass in [lo, hi)."""
        return float(self._per_vector((self.nodes >= lo) & (self.nodes < hi)).mean())

    def _ratio(self, inside: np.ndarray) -> tuple[float, float]:
        per = self._per_vector(inside)
        return float(per.mean()), self._stderr(per)

    def negative_ratio(self, eps: float = 1e-3) -> float:
        """μ(λ < −ε·λmax)."""
        return self.mass(hi=-eps * self.scale)

    def negative_ratio_stderr(self, eps: float = 1e-3) -> float:
        return self._ratio(self.nodes < -eps * self.scale)[1]

    def degenerate_ratio(self, eps: float = 1e-3) -> float:
        """μ(|λ| < ε·λmax): the near-zero (degenerate) fraction of the spectrum."""
        return self._ratio(np.abs(self.nodes) < eps * self.scale)[0]

    def degenerate_ratio_stderr(self, eps: float = 1e-3) -> float:
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
        with the loss of orthogonality of a long unreorthogonalized run it holds approximately."""
        f_hi_low, f_hi_up = self._cdf_bounds(hi)
        f_lo_low, f_lo_up = self._cdf_bounds(lo)
        low = np.clip(f_hi_low - f_lo_up, 0.0, 1.0)
        up = np.clip(f_hi_up - f_lo_low, 0.0, 1.0)
        return float(low.mean()), float(up.mean())

    def mass_below(self, threshold: float) -> tuple[float, float]:
        """(μ(|λ| < threshold), stderr over vectors): an absolute, λmax-free degeneracy measure."""
        return self._ratio(np.abs(self.nodes) < threshold)

    def median_abs(self) -> float:
        """The median of |λ| under the spectral measure (weighted median of all vectors' nodes)."""
        a = np.abs(self.nodes).ravel()
        order = np.argsort(a, kind="stable")
        cdf = np.cumsum(self.weights.ravel()[order]) / self.vectors
        return float(a[order][min(int(np.searchsorted(cdf, 0.5)), a.size - 1)])

    def bulk_degenerate_ratio(self, eps: float = 1e-2) -> tuple[float, float]:
        """(μ(|λ| < ε·median|λ|), stderr): near-zero mass relative to the bulk's own scale, blind to
        outliers (the threshold's own noise is not in the stderr)."""
        return self._ratio(np.abs(self.nodes) < eps * self.median_abs())

    def effective_rank(self) -> tuple[float, float]:
        """(effective rank, jackknife stderr over vectors): exp of the entropy of |λ_i| / Σ|λ_j|, i.e.
        dim·S·exp(−T/S) with S = ∫|λ|dμ, T = ∫|λ| log|λ| dμ (Roy & Vetterli 2007). Between 1 and dim,
        invariant to scaling the matrix, no threshold."""
        a = np.abs(self.nodes)
        S = self._per_vector(a)
        T = self._per_vector(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0))

        def erank(s: float, t: float) -> float:
            return float(self.dim * s * math.exp(-t / s)) if s > 0 else 0.0

        value = erank(S.mean(), T.mean())
        k = self.vectors
        if k < 2:
            return value, float("nan")
        loo = np.array([erank((S.sum() - S[i]) / (k - 1), (T.sum() - T[i]) / (k - 1)) for i in range(k)])
        return value, float(math.sqrt((k - 1) / k * ((loo - loo.mean()) ** 2).sum()))

    def outliers(self, ratio: float = 0.1) -> int:
        """Eigenvalues above ratio·λmax, counted as converged Ritz values: the median over vectors of
        how many nodes exceed ratio·λmax (isolated top eigenvalues appear once in every vector)."""
        return int(np.median((self.nodes > ratio * self.scale).sum(axis=1)))

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
        return math.sqrt(1e-5 * max(1.0, self.lambda_max - self.lambda_min))

    def density(
        self, grid: np.ndarray | None = None, sigma: float | None = None, n_grid: int = 1000
    ) -> tuple[np.ndarray, np.ndarray]:
        """(grid, density) with Gaussian broadening σ; the default grid spans [λmin − 5σ, λmax + 5σ]
        so the density integrates to 1 on it."""
        sigma = sigma or self.default_sigma()
        if grid is None:
            grid = np.linspace(self.lambda_min - 5 * sigma, self.lambda_max + 5 * sigma, n_grid)
        grid = np.asarray(grid, dtype=np.float64)
        return grid, _gauss(grid, self.nodes.ravel(), self.weights.ravel() / self.vectors, sigma)

    def log_density(
        self, grid: np.ndarray | None = None, sigma: float = 0.05, n_grid: int = 500, floor: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u grid, positive part, negative part): densities over u = log10|λ| of the eigenvalues above 0
        and below 0, broadened by σ in u. Nodes with |λ| ≤ floor (default 1e-6·λmax) are left out; so
        ∫pos + ∫neg = 1 − μ(|λ| ≤ floor)."""
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
        bulk_eps·median|λ|, effective rank, outlier count, and the refined top-k when computed."""
        neg, neg_se = self._ratio(self.nodes < -eps * self.scale)
        deg, deg_se = self._ratio(np.abs(self.nodes) < eps * self.scale)
        bulk, bulk_se = self.bulk_degenerate_ratio(bulk_eps)
        erank, erank_se = self.effective_rank()
        out: dict[str, Any] = {
            "lambda_max": self.lambda_max,
            "lambda_max_stderr": self.lambda_max_stderr,
            "lambda_max_residual": float(self.top.residuals[0]) if self.top is not None else float("nan"),
            "lambda_max_batches": int(self.lambda_max_noise["batches"]) if self.lambda_max_noise else 0,
            "lambda_max_noisy": self.lambda_max_noisy,
            "lambda_min": self.lambda_min,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "negative_ratio": neg,
            "negative_ratio_stderr": neg_se,
            "degenerate_ratio": deg,
            "degenerate_ratio_stderr": deg_se,
            "eps": eps,
        }
        # what the quadrature can guarantee about each thresholded mass (`mass_bounds`): [low, high]
        out["negative_ratio_low"], out["negative_ratio_high"] = self.mass_bounds(-math.inf, -eps * self.scale)
        out["degenerate_ratio_low"], out["degenerate_ratio_high"] = self.mass_bounds(-eps * self.scale,
                                                                                     eps * self.scale)
        for t in thresholds:
            m, se = self.mass_below(t)
            out[f"mass_below_{t:.0e}"], out[f"mass_below_{t:.0e}_stderr"] = m, se
            out[f"mass_below_{t:.0e}_low"], out[f"mass_below_{t:.0e}_high"] = self.mass_bounds(-t, t)
        median = self.median_abs()
        out["bulk_degenerate_ratio_low"], out["bulk_degenerate_ratio_high"] = self.mass_bounds(-bulk_eps * median,
                                                                                               bulk_eps * median)
        out.update(
            median_abs_eigenvalue=median,
            bulk_degenerate_ratio=bulk,
            bulk_degenerate_ratio_stderr=bulk_se,
            bulk_eps=bulk_eps,
            effective_rank=erank,
            effective_rank_stderr=erank_se,
            outliers=self.outliers(outlier_ratio),
            outlier_ratio=outlier_ratio,
            n_params=self.dim,
            vectors=self.vectors,
            iters=int(self.nodes.shape[1]),
        )
        if self.top is not None:
            out.update(
                top_eigenvalues=self.top.eigenvalues.tolist(),
                top_residuals=self.top.residuals.tolist(),
                top_converged=self.top.converged,
                top_products=self.top.n_products,
            )
        return out

    def to_dict(self, eps: float = 1e-3, grid: np.ndarray | None = None, sigma: float | None = None) -> dict:
        """Summary, meta, the density on a grid, and nodes/weights as nested lists (JSON-able)."""
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


@over_shards
def slq_density(
    op: LinearOperator,
    iters: int = 80,
    vectors: int = 4,
    seed: int = 0,
    *,
    top_k: int = 0,
    top_tol: float | None = None,
    top_max_matmats: int = 100,
    data_stderr: bool = True,
    reorth: str = "full",
    basis_device: torch.device | str | None = None,
    callback=None,
    state: dict | None = None,
    on_state=None,
    state_every: int = 10,
    max_basis_bytes: int | None = None,
) -> SpectralDensity:
    """SLQ of an operator (dim, dtype, device, matmat): `vectors` Lanczos runs of `iters` steps, batched
    into one matmat per step.

    Memory: full reorthogonalization keeps every chain's basis, vectors · iters · dim numbers (80 × 8 on an
    11M-parameter ResNet-18 in float32 would be 26.7 GiB). When that exceeds `max_basis_bytes` (default:
    half the free memory of the basis device), the chains run in consecutive groups that fit, from the
    same start vectors, so the nodes and weights equal those of one batched run; each group still shares
    its data passes. A grouped run cannot checkpoint mid-run (state / on_state need one group).
    state / on_state / state_every checkpoint and resume the Lanczos run (see
    `lanczos`); a resumed run gives the same nodes and weights as an uninterrupted one.

    top_k > 0 also computes the top_k largest eigenpairs (`.top`) from the same Krylov run: the best
    Ritz vectors of all chains, with their products from the Lanczos relation, seed `top_eigenpairs`
    (tol `top_tol`, at most `top_max_matmats` further matmats), which verifies them with one product
    of k vectors and iterates further only if they are not yet converged. data_stderr then adds λmax's
    data-noise stderr from per-batch Rayleigh quotients (one more pass with one vector; operators
    without batches give nan). Needs reorth="full".
    """
    check_operator(op, "slq_density")
    t0 = time.perf_counter()
    group = chains_per_group(op, iters, vectors, reorth, top_k > 0, basis_device, max_basis_bytes)
    if group < vectors and state is not None:
        group = vectors  # resuming a saved single-group run: keep its layout
    if group < vectors and on_state is not None:
        warnings.warn(f"slq_density: the Lanczos basis of {vectors} vectors exceeds the memory budget; running "
                      f"{math.ceil(vectors / group)} groups of {group}, without mid-run checkpoints", stacklevel=2)
    count = min(vectors * iters, 2 * top_k + 2)
    kw = {"iters": iters, "seed": seed, "reorth": reorth, "basis_device": basis_device, "callback": callback,
          "return_basis": top_k > 0}
    if group >= vectors:
        res = lanczos(op, vectors=vectors, state=state, on_state=on_state, state_every=state_every, **kw)
        seeds = res.top_ritz(count) if top_k > 0 else None
        res.basis = res.residual = None
    else:
        res, seeds = grouped_lanczos(op, vectors, group, count if top_k > 0 else 0, kw)
    nodes, weights = res.ritz()
    meta = {"seed": seed, "reorth": reorth, "breakdowns": res.breakdowns, "seconds": time.perf_counter() - t0,
            "chains_per_group": group}
    sd = SpectralDensity(nodes, weights, full_dim(op), meta)
    if top_k > 0:
        t1 = time.perf_counter()
        _, U, AU = seeds
        sd.top = top_eigenpairs(
            op, top_k, init=U.T, init_product=AU.T, tol=top_tol, max_matmats=top_max_matmats, seed=seed
        )
        del U, AU
        if data_stderr:
            sd.lambda_max_noise = rayleigh_stderr(op, sd.top.eigenvectors[:, 0])
        meta["top_seconds"] = time.perf_counter() - t1
    return sd
