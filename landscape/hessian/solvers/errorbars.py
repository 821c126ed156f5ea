"""Data-noise error bars: how much a curvature number would move if the samples were drawn again
(docs/methods.md §E.4).

The operator averages per-batch matrices, H = Σ_b w_b H_b with w_b = n_b / N. To first order a
perturbation δH moves a simple eigenvalue by vᵀ δH v (v its unit eigenvector), so λmax inherits the
spread of the per-batch Rayleigh quotients ρ_b = vᵀ H_b v around their weighted mean λ = Σ w_b ρ_b:

    stderr(λ)² = Σ_b w_b (ρ_b − λ)² / (B − 1)

A batch's quotient is a mean over its n_b samples, so its variance is σ²/n_b (σ² the per-sample
variance); Σ_b n_b (ρ_b − λ)² / (B − 1) estimates σ², and the weighted mean's variance is σ²/N. For B
equal batches this is sd/√B. (Treating the ρ_b as equally noisy would overstate the error by ~30%
for mixed batch sizes: tests/hessian/test_errorbars.py measures it.)

This is the data (sampling) noise, separate from the vector noise of SLQ (spread over random vectors)
and from the solver's residual ‖Hv − λv‖. It needs the operator's batches: an operator with
`batch_quadratic_forms(V, pieces)` (HessianOperator, GGNOperator) provides them; other operators get
nan. With fewer than `min_batches` batches each batch is cut into pieces along the sample axis, which
is the same matrix when the loss is a batch mean of independent samples (the operator's own merging
rests on the same assumption). Under torch.distributed the batches are every rank's (the operator gathers them).
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from landscape.hessian.solvers.protocol import LinearOperator


def weighted_stderr(values: np.ndarray, sizes: np.ndarray) -> tuple[float, float]:
    """The size-weighted mean of per-batch means and its standard error: λ = Σ w_b ρ_b,
    stderr² = Σ w_b (ρ_b − λ)² / (B − 1), w_b = n_b / N (module docstring).

    Args:
        values: per-batch means ρ_b [B].
        sizes: samples per batch n_b [B].

    Returns:
        (mean, stderr; nan if B < 2).
    """
    values = np.asarray(values, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    w = w / w.sum()
    mean = float(w @ values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(float(w @ (values - mean) ** 2) / (len(values) - 1))


def batch_rayleigh(op: LinearOperator, V: Tensor, min_batches: int = 8) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-batch Rayleigh quotients v_iᵀ H_b v_i of the unit columns of V.

    Args:
        op: the operator; it needs `batch_quadratic_forms(V, pieces)`.
        V: unit vectors [dim, k].
        min_batches: batches are cut into pieces along the sample axis until there are this many.

    Returns:
        (sample counts n_b [B], quotients [B, k]), or None when the operator does not expose its batches.
    """
    forms = getattr(op, "batch_quadratic_forms", None)
    if forms is None:
        return None
    sizes, q = forms(V)
    if len(sizes) < min_batches:
        sizes, q = forms(V, pieces=math.ceil(min_batches / max(1, len(sizes))))
    return np.asarray(sizes), np.asarray(q)


def rayleigh_stderr(op: LinearOperator, v: Tensor, min_batches: int = 8) -> dict:
    """vᵀHv as the weighted mean of per-batch quotients, and its data stderr (§E.4).

    Args:
        op: the operator.
        v: a unit vector [dim] (e.g. the top eigenvector).
        min_batches: as in `batch_rayleigh`.

    Returns:
        {"value", "stderr", "batches"} (nan without batches or with one).
    """
    v = v.reshape(-1, 1)
    got = batch_rayleigh(op, v, min_batches)
    if got is None:
        return {"value": float("nan"), "stderr": float("nan"), "batches": 0}
    sizes, q = got
    mean, se = weighted_stderr(q[:, 0], sizes)
    return {"value": mean, "stderr": se, "batches": int(len(sizes))}
