"""Stream-vs-update geometry (SPEC B.3): how a block's raw update f sits relative to its stream x.

Per vector (one per token / pixel / sample, reduced over dims D), with ε = 1e-6:
    n2 = max(‖x‖², ε),  s = ⟨x,f⟩ / n2,  f_par = s·x,  f_perp = f − f_par
    x_norm2 = n2           f_par_norm2 = max(‖f_par‖², ε)     f_ortho_norm2 = max(‖f_perp‖², ε)
    rho_par = f_par_norm2 / n2     rho_ortho = f_ortho_norm2 / n2
    cos_x_out = ⟨x,f⟩ / sqrt(n2 · max(‖f‖², ε))
and each statistic is the mean over all vectors (batch × tokens, batch × pixels). The clamps at ε are
the reference's `connect._stats` convention (BootsofLagrangian/ortho-residual, linear path); its
orthogonal path adds ε to ‖x‖² instead, a difference of at most ε. f is the RAW update (before any
projection), so cos_x_out means the same in linear and orthogonal runs.

D: "feature" = the Connect's `reduce_dims` (the projection's own dims, as B.3 prescribes), or for
other sites the channel dim 1 of [B, C, H, ...] tensors and the last dim otherwise; "global" = all
but the batch dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

STREAM_METRICS = ("x_norm2", "f_par_norm2", "f_ortho_norm2", "rho_par", "rho_ortho", "cos_x_out")
REDUCTIONS = ("feature", "global")


def stream_dims(x: Tensor, reduce: str, connect_dims: Sequence[int] | None = None) -> tuple[int, ...]:
    """Reduction dims D (non-negative) for a stream tensor `x` under `reduce` ("feature" | "global")."""
    if reduce == "global":
        return tuple(range(1, x.dim()))
    if connect_dims is not None:
        dims = connect_dims
    else:
        dims = (1,) if x.dim() >= 4 else (-1,)
    return tuple(sorted(d % x.dim() for d in dims))


def stream_sums(x: Tensor, f: Tensor, dims: Sequence[int], eps: float = 1e-6) -> tuple[Tensor, int]:
    """Sums over vectors of the six per-vector statistics for K sites stacked on a new dim 0.

    `x`, `f`: [K, *shape]; `dims`: non-negative reduction dims of the UNstacked shape. Returns
    (sums [K, 6] in float64, number of vectors per site); the statistics are sums / count.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    x, f = x.to(acc), f.to(acc)
    d = tuple(k + 1 for k in dims)
    dot = (x * f).sum(d, keepdim=True)
    n2raw = (x * x).sum(d, keepdim=True)
    n2 = n2raw.clamp_min(eps)
    s = dot / n2
    par = (s * s * n2raw).clamp_min(eps)
    perp = (f - s * x).square().sum(d, keepdim=True).clamp_min(eps)
    ff = (f * f).sum(d, keepdim=True).clamp_min(eps)
    cos = dot / (n2 * ff).sqrt()
    per_vec = torch.stack([n2, par, perp, par / n2, perp / n2, cos], dim=1)  # [K, 6, ...]
    count = dot[0].numel()
    return per_vec.flatten(2).sum(2, dtype=torch.float64), count


def stream_stats(x: Tensor, f: Tensor, reduce: str = "feature", dims: Sequence[int] | None = None,
                 eps: float = 1e-6) -> dict[str, float]:
    """The six SPEC B.3 statistics of one (stream, update) pair, as a dict of floats."""
    with torch.no_grad():
        sums, count = stream_sums(x.unsqueeze(0), f.unsqueeze(0), stream_dims(x, reduce, dims), eps)
    return dict(zip(STREAM_METRICS, (sums[0] / count).tolist()))
