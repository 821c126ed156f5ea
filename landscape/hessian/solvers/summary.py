"""The summary of a SpectralDensity: every number with its error bar, as one flat dict (spectrum.json's core)."""

from __future__ import annotations

import math
from typing import Any


def summarize(sd: Any, eps: float = 1e-3, outlier_ratio: float = 0.1, thresholds: tuple[float, ...] = (1e-3, 1e-5),
              bulk_eps: float = 1e-2) -> dict[str, Any]:
    """λmax (± data stderr, solver residual), λmin, trace, negative and degenerate ratios at ε·λmax (± vector
    stderr) with the brackets the quadrature guarantees, mass below absolute thresholds, mass below
    bulk_eps·median|λ|, effective rank, outlier count, and the refined top-k when computed.

    Args:
        sd: a spectrum.SpectralDensity.
        eps: ε of the λmax-relative masses.
        outlier_ratio: the `outliers` threshold.
        thresholds: absolute thresholds of `mass_below`.
        bulk_eps: ε of `bulk_degenerate_ratio`.

    Returns:
        A flat dict of numbers (nan where a number has no estimate, e.g. stderrs of 2 vectors).
    """
    neg, neg_se = sd.negative_ratio(eps), sd.negative_ratio_stderr(eps)
    deg, deg_se = sd.degenerate_ratio(eps), sd.degenerate_ratio_stderr(eps)
    bulk, bulk_se = sd.bulk_degenerate_ratio(bulk_eps)
    erank, erank_se = sd.effective_rank()
    out: dict[str, Any] = {
        "lambda_max": sd.lambda_max,
        "lambda_max_stderr": sd.lambda_max_stderr,
        "lambda_max_residual": float(sd.top.residuals[0]) if sd.top is not None else float("nan"),
        "lambda_max_batches": int(sd.lambda_max_noise["batches"]) if sd.lambda_max_noise else 0,
        "lambda_max_noisy": sd.lambda_max_noisy,
        "lambda_min": sd.lambda_min,
        "trace": sd.trace,
        "trace_stderr": sd.trace_stderr,
        "negative_ratio": neg,
        "negative_ratio_stderr": neg_se,
        "degenerate_ratio": deg,
        "degenerate_ratio_stderr": deg_se,
        "eps": eps,
    }
    # what the quadrature can guarantee about each thresholded mass (`mass_bounds`): [low, high]
    out["negative_ratio_low"], out["negative_ratio_high"] = sd.mass_bounds(-math.inf, -eps * sd.scale)
    out["degenerate_ratio_low"], out["degenerate_ratio_high"] = sd.mass_bounds(-eps * sd.scale,
                                                                                 eps * sd.scale)
    for t in thresholds:
        m, se = sd.mass_below(t)
        out[f"mass_below_{t:.0e}"], out[f"mass_below_{t:.0e}_stderr"] = m, se
        out[f"mass_below_{t:.0e}_low"], out[f"mass_below_{t:.0e}_high"] = sd.mass_bounds(-t, t)
    median = sd.median_abs()
    out["bulk_degenerate_ratio_low"], out["bulk_degenerate_ratio_high"] = sd.mass_bounds(-bulk_eps * median,
                                                                                           bulk_eps * median)
    out.update(
        median_abs_eigenvalue=median,
        bulk_degenerate_ratio=bulk,
        bulk_degenerate_ratio_stderr=bulk_se,
        bulk_eps=bulk_eps,
        effective_rank=erank,
        effective_rank_stderr=erank_se,
        outliers=sd.outliers(outlier_ratio),
        outlier_ratio=outlier_ratio,
        n_params=sd.dim,
        vectors=sd.vectors,
        iters=int(sd.nodes.shape[1]),
    )
    if sd.top is not None:
        out.update(
            top_eigenvalues=sd.top.eigenvalues.tolist(),
            top_residuals=sd.top.residuals.tolist(),
            top_converged=sd.top.converged,
            top_products=sd.top.n_products,
        )
    return out
