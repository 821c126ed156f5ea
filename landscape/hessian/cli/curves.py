"""Plot-ready curves of an SLQ spectrum: what `landscape.plots` draws, computed here from nodes and weights.

Engine layer (the plots take these plain arrays and import no engine). The linear view broadens each Ritz
node by a Gaussian (docs/methods.md §E); the log view is the density of log10|λ| split by sign.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from landscape.hessian.solvers.spectrum import SpectralDensity


def spectrum_curves(spectrum: Mapping, *, n_grid: int = 2000, log_sigma: float = 0.05) -> dict:
    """Plot curves of one SLQ spectrum (a plain dict with "nodes", "weights" [vectors, iters] and "dim", plus
    its summary keys): the log10|λ| view ("log_grid", "log_positive", "log_negative", broadened by
    `log_sigma` decades) and the linear view ("grid", "density", broadened by σ = max(default σ, 1.5 grid
    steps) so no Ritz node falls between grid points), with "degenerate_ratio", "negative_ratio" and "eps"
    at the threshold the spectrum reports.

    Args:
        spectrum: the spectrum dict.
        n_grid: points of each grid.
        log_sigma: the Gaussian broadening of the log view, in decades.

    Returns:
        The curves dict.
    """
    nodes = np.atleast_2d(np.asarray(spectrum["nodes"], dtype=np.float64))
    weights = np.atleast_2d(np.asarray(spectrum["weights"], dtype=np.float64))
    sd = SpectralDensity(nodes, weights, int(spectrum.get("dim") or spectrum.get("n_params") or nodes.shape[1]))
    eps = float(spectrum.get("eps", 1e-3))
    pad = 0.02 * (sd.lambda_max - sd.lambda_min) or 1.0
    grid = np.linspace(sd.lambda_min - pad, sd.lambda_max + pad, n_grid)
    _, density = sd.density(grid, max(sd.default_sigma(), 1.5 * (grid[1] - grid[0])))
    u, pos, neg = sd.log_density(sigma=log_sigma)
    return {"grid": grid, "density": density, "log_grid": u, "log_positive": pos, "log_negative": neg,
            "degenerate_ratio": sd.degenerate_ratio(eps), "negative_ratio": sd.negative_ratio(eps), "eps": eps,
            "lambda_max": sd.lambda_max}
