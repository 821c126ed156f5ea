"""Li et al. 2018's non-convexity measures: |λmin/λmax| of the Hessian at a point, and of a 2-D surface.

    ext = curvature_extremes(model, loss_fn, (X, y), tol=1e-2)    # {"lambda_max", "lambda_min", "ratio", ...}
    r = surface_nonconvexity(axis, loss, radius=0.5)              # mean 2-D ratio over the disc

Hessian (docs/methods.md §F.6): H = ∇²L at the model's parameters (a `HessianOperator`, eval mode).
λmax is the top eigenvalue of H and λmin = −(top eigenvalue of −H), each from `top_eigenpairs` (block
Krylov with thick restarts). Its stopping rule is residual ‖Av − θv‖ ≤ tol × the largest |Ritz value| of the
basis, which for both solves is ≈ λmax (the basis of −H also holds Ritz values near −λmax). A vector in the
near-null space of H has Rayleigh quotient ≈ 0 and a residual far below λmax, so with a loose tol the λmin
solve stops there after one or two products whatever λmin is (the same happens to a shifted solve on
σI − H); `tol` must lie well below the ratio |λmin/λmax| to be resolved (10⁻⁴ for ratios ≥ 10⁻³, checked
against 150-product solves and plain Lanczos). A Ritz value never exceeds the top eigenvalue, so the λmin
returned is an upper bound on the true one; an unconverged solve is reported with its residual.

Surface (a 2-D grid on non-uniform axes): at each interior point the 2 × 2 finite-difference Hessian of the
loss, f_xx = 2[(f₊ − f₀)/h₊ − (f₀ − f₋)/h₋]/(h₊ + h₋) (likewise f_yy), f_xy from the four diagonal
neighbours / ((h₊ + h₋)(k₊ + k₋)); its eigenvalues μ₁ ≤ μ₂ give the point's ratio |min(μ₁, 0)| / max|μ|
(0 where the surface is locally convex), averaged over the points with ‖(a, b)‖ ≤ radius.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.hessian import HessianOperator, top_eigenpairs


class Negated:
    """−A for a symmetric operator A (the `LinearOperator` protocol): its top eigenvalue is −λmin(A).

    Args:
        op: any object with dim, dtype, device and matmat(V [dim, k]) -> [dim, k].
    """

    def __init__(self, op: Any):
        self.op, self.dim, self.dtype, self.device = op, op.dim, op.dtype, op.device

    def matmat(self, V: Tensor) -> Tensor:
        """−A V.

        Args:
            V: [dim, k] block of vectors.

        Returns:
            [dim, k] products.
        """
        return -self.op.matmat(V)


def curvature_extremes(model: nn.Module, loss_fn: Callable, data: Any, *, tol: float = 1e-4,
                       max_matmats: int = 40, seed: int = 0, backend: str = "auto",
                       check_deterministic: bool = True) -> dict:
    """λmax and λmin of the Hessian of `loss_fn` over `data` at the model's parameters, and |λmin/λmax|.

    Args:
        model: the net (its train/eval flags are the operator's; BatchNorm must be in eval mode).
        loss_fn: batch-mean loss `loss_fn(output, target)`.
        data: (X, y) or batches, as `HessianOperator` takes them.
        tol: residual of each eigen-solve relative to the largest |Ritz value| (module docstring: keep it well
            below the ratios to be resolved).
        max_matmats: products per solve before it stops unconverged.
        seed: seed of the solves' start vectors.
        backend: the operator's backend ("auto" times both on the first batch; naming one saves that).
        check_deterministic: the operator's determinism check at construction (two products).

    Returns:
        {"lambda_max", "lambda_min", "ratio" = |λmin|/λmax, "residual_max", "residual_min", "converged_max",
        "converged_min", "matmats"} (plain floats, bools and an int).
    """
    op = HessianOperator(model, loss_fn, data, seed=seed, backend=backend, check_deterministic=check_deterministic)
    top = top_eigenpairs(op, 1, tol=tol, max_matmats=max_matmats, seed=seed)
    low = top_eigenpairs(Negated(op), 1, tol=tol, max_matmats=max_matmats, seed=seed + 1)
    lam_max, lam_min = float(top.eigenvalues[0]), -float(low.eigenvalues[0])
    return {"lambda_max": lam_max, "lambda_min": lam_min,
            "ratio": abs(lam_min) / lam_max if lam_max > 0 else float("nan"),
            "residual_max": float(top.residuals[0]), "residual_min": float(low.residuals[0]),
            "converged_max": bool(top.converged), "converged_min": bool(low.converged),
            "matmats": int(top.matmats + low.matmats)}


def surface_hessians(axis: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite-difference (f_xx, f_xy, f_yy) at the interior points of a 2-D surface on a non-uniform grid.

    Args:
        axis: [n] coordinates of both axes (ascending).
        loss: [n, n] with loss[i, j] at (axis[j], axis[i]).

    Returns:
        Three [n − 2, n − 2] arrays for the interior points (rows: y, columns: x).
    """
    x = np.asarray(axis, float)
    f = np.asarray(loss, float)
    hm, hp = (x[1:-1] - x[:-2]), (x[2:] - x[1:-1])             # spacing below / above each interior point
    c = f[1:-1, 1:-1]
    fxx = 2 * ((f[1:-1, 2:] - c) / hp[None, :] - (c - f[1:-1, :-2]) / hm[None, :]) / (hp + hm)[None, :]
    fyy = 2 * ((f[2:, 1:-1] - c) / hp[:, None] - (c - f[:-2, 1:-1]) / hm[:, None]) / (hp + hm)[:, None]
    fxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / np.outer(hp + hm, hp + hm)
    return fxx, fxy, fyy


def surface_nonconvexity(axis: np.ndarray, loss: np.ndarray, radius: float = 0.5) -> float:
    """Mean over the interior grid points within `radius` of the origin of |min(μ₁, 0)| / max(|μ₁|, |μ₂|),
    μ the eigenvalues of the surface's 2 × 2 finite-difference Hessian (module docstring).

    Args:
        axis: [n] coordinates of both axes.
        loss: [n, n] surface.
        radius: the disc averaged over.

    Returns:
        The mean ratio in [0, 1] (NaN when no finite point lies in the disc).
    """
    fxx, fxy, fyy = surface_hessians(axis, loss)
    mid, half = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    mu1, mu2 = mid - half, mid + half
    scale = np.maximum(np.abs(mu1), np.abs(mu2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(scale > 0, np.maximum(-mu1, 0) / scale, 0.0)
    inner = np.asarray(axis, float)[1:-1]
    disc = np.hypot(inner[None, :], inner[:, None]) <= radius + 1e-12
    vals = ratio[disc & np.isfinite(ratio)]
    return float(vals.mean()) if vals.size else float("nan")

