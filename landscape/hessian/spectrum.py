"""Eigenvalue density by stochastic Lanczos quadrature (SLQ), and its summary statistics.

For a unit probe v, vᵀ f(A) v = Σ_i w_i f(θ_i) with Ritz values θ_i (the nodes) and weights
w_i = (first component of T's i-th eigenvector)² (Golub & Meurant; Lin, Saad & Yang 2016). Averaged
over k probes this is the spectral measure μ = (1/dim) Σ_j δ(λ_j) seen through k·m weighted nodes:

    density(t) = (1/k) Σ_probes Σ_i w_i N(t; θ_i, σ²)                 (linear grid; plotted with a
                                                                       log y-axis by Ghorbani et al. 2019)
    density over u = log10|λ|, positive and negative parts separately (log-x plots, Papyan 2020)
    trace ≈ dim · (1/k) Σ_probes Σ_i w_i θ_i
    negative mass = μ(λ < −ε·λmax), degenerate (near-zero) mass = μ(|λ| < ε·λmax)   (SPEC A.2: ε = 1e-3)

Default broadening: σ² = 1e-5 · max(1, λmax − λmin), the default of PyHessian's density plot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.hessian.lanczos import lanczos


def _gauss(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (np.exp(-0.5 * z**2) @ weights) / (sigma * math.sqrt(2 * math.pi))


@dataclass
class SpectralDensity:
    """SLQ nodes and weights per probe (rows of [k, m]; each row's weights sum to 1) over a dim-sized matrix."""

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    meta: dict = field(default_factory=dict)

    @property
    def probes(self) -> int:
        return self.nodes.shape[0]

    @property
    def lambda_max(self) -> float:
        """Largest Ritz value (a lower bound on λmax that converges fastest of all)."""
        return float(self.nodes.max())

    @property
    def lambda_min(self) -> float:
        return float(self.nodes.min())

    @property
    def scale(self) -> float:
        """λmax for ε-thresholds (max |λ| when no eigenvalue is positive)."""
        return self.lambda_max if self.lambda_max > 0 else float(np.abs(self.nodes).max())

    def _per_probe(self, values: np.ndarray) -> np.ndarray:
        return (self.weights * values).sum(axis=1)

    @property
    def trace(self) -> float:
        """dim · mean over probes of Σ w θ (each probe's vᵀAv)."""
        return float(self.dim * self._per_probe(self.nodes).mean())

    @property
    def trace_stderr(self) -> float:
        """Standard error of `trace` over probes (nan with one probe)."""
        if self.probes < 2:
            return float("nan")
        return float(self.dim * self._per_probe(self.nodes).std(ddof=1) / math.sqrt(self.probes))

    def mass(self, lo: float = -math.inf, hi: float = math.inf) -> float:
        """Spectral mass in [lo, hi)."""
        return float(self._per_probe((self.nodes >= lo) & (self.nodes < hi)).mean())

    def negative_ratio(self, eps: float = 1e-3) -> float:
        """μ(λ < −ε·λmax)."""
        return self.mass(hi=-eps * self.scale)

    def degenerate_ratio(self, eps: float = 1e-3) -> float:
        """μ(|λ| < ε·λmax): the near-zero (degenerate) fraction of the spectrum."""
        return float(self._per_probe(np.abs(self.nodes) < eps * self.scale).mean())

    def outliers(self, ratio: float = 0.1) -> int:
        """Eigenvalues above ratio·λmax, counted as converged Ritz values: the median over probes of
        how many nodes exceed ratio·λmax (isolated top eigenvalues appear once in every probe)."""
        return int(np.median((self.nodes > ratio * self.scale).sum(axis=1)))

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
        return grid, _gauss(grid, self.nodes.ravel(), self.weights.ravel() / self.probes, sigma)

    def log_density(
        self, grid: np.ndarray | None = None, sigma: float = 0.05, n_grid: int = 500, floor: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u grid, positive part, negative part): densities over u = log10|λ| of the eigenvalues above 0
        and below 0, broadened by σ in u. Nodes with |λ| ≤ floor (default 1e-6·λmax) are left out; so
        ∫pos + ∫neg = 1 − μ(|λ| ≤ floor)."""
        floor = floor if floor is not None else 1e-6 * self.scale
        nodes, w = self.nodes.ravel(), self.weights.ravel() / self.probes
        keep = np.abs(nodes) > floor
        u = np.log10(np.abs(nodes[keep]))
        w = w[keep]
        pos = nodes[keep] > 0
        if grid is None:
            lo, hi = (u.min(), u.max()) if u.size else (0.0, 1.0)
            grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
        grid = np.asarray(grid, dtype=np.float64)
        return grid, _gauss(grid, u[pos], w[pos], sigma), _gauss(grid, u[~pos], w[~pos], sigma)

    def summary(self, eps: float = 1e-3, outlier_ratio: float = 0.1) -> dict[str, Any]:
        """λmax, λmin, trace (± stderr), negative / degenerate ratios at ε, outlier count."""
        return {
            "lambda_max": self.lambda_max,
            "lambda_min": self.lambda_min,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "negative_ratio": self.negative_ratio(eps),
            "degenerate_ratio": self.degenerate_ratio(eps),
            "eps": eps,
            "outliers": self.outliers(outlier_ratio),
            "outlier_ratio": outlier_ratio,
            "n_params": self.dim,
            "probes": self.probes,
            "iters": int(self.nodes.shape[1]),
        }

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

    def save_npz(self, path: str | Path) -> None:
        """nodes, weights [k, m] and dim in an .npz file."""
        np.savez(path, nodes=self.nodes, weights=self.weights, dim=np.int64(self.dim))

    @classmethod
    def load_npz(cls, path: str | Path) -> SpectralDensity:
        with np.load(path) as f:
            return cls(f["nodes"], f["weights"], int(f["dim"]))


def slq_density(
    op: Any,
    iters: int = 80,
    probes: int = 4,
    seed: int = 0,
    *,
    reorth: str = "full",
    basis_device: torch.device | str | None = None,
    callback=None,
    state: dict | None = None,
    on_state=None,
    state_every: int = 10,
) -> SpectralDensity:
    """SLQ of an operator (anything `lanczos` accepts with `.dim`): `probes` Lanczos runs of `iters`
    steps, batched into one matmat per step. state / on_state / state_every checkpoint and resume the
    Lanczos run (see `lanczos`); a resumed run gives the same nodes and weights as an uninterrupted one."""
    t0 = time.perf_counter()
    res = lanczos(
        op,
        iters=iters,
        probes=probes,
        seed=seed,
        reorth=reorth,
        basis_device=basis_device,
        callback=callback,
        state=state,
        on_state=on_state,
        state_every=state_every,
    )
    nodes, weights = res.ritz()
    meta = {"seed": seed, "reorth": reorth, "breakdowns": res.breakdowns, "seconds": time.perf_counter() - t0}
    return SpectralDensity(nodes, weights, int(op.dim), meta)
