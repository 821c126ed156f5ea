"""Stream-vs-update geometry (docs/methods.md §B.3): how a block's raw update f sits relative to its stream x.

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
    """Reduction dims D (non-negative) for a stream tensor `x` under `reduce` ("feature" | "global").

    Args:
        x: the stream tensor.
        reduce: "feature" or "global".
        connect_dims: the block's own reduction dims (None: the feature dim of x's layout).

    Returns:
        D.
    """
    if reduce == "global":
        return tuple(range(1, x.dim()))
    if connect_dims is not None:
        dims = connect_dims
    else:
        dims = (1,) if x.dim() >= 4 else (-1,)
    return tuple(sorted(d % x.dim() for d in dims))


def vector_products(x: Tensor, f: Tensor, dims: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """(⟨x,f⟩, ‖x‖², ‖f‖²) per vector, reduced over the non-negative `dims`, in at least float32.

    The only passes over the full tensors; a probe takes them in its hook, while x and f are hot in
    cache, and keeps only these per-vector numbers.

    Args:
        x: the stream.
        f: the update, the shape of x.
        dims: the reduction dims.

    Returns:
        (⟨x,f⟩, ‖x‖², ‖f‖²).
    """
    acc = torch.promote_types(torch.promote_types(x.dtype, f.dtype), torch.float32)
    if x.dtype != acc or f.dtype != acc:
        x, f = x.to(acc), f.to(acc)
    dims = tuple(dims)
    if dims == tuple(range(dims[0], x.dim())):  # trailing dims: one flat dot product per vector
        x, f = x.flatten(dims[0]), f.flatten(dims[0])
        return (torch.linalg.vecdot(x, f, dim=-1), torch.linalg.vecdot(x, x, dim=-1),
                torch.linalg.vecdot(f, f, dim=-1))
    return (x * f).sum(dims), (x * x).sum(dims), (f * f).sum(dims)


def sums_from_products(products: Tensor, eps: float = 1e-6) -> Tensor:
    """Sums over vectors of the six statistics from `products` [K, 3, vectors] → [K, 6] float64.

    ‖f_perp‖² = ‖f‖² − 2s⟨x,f⟩ + s²‖x‖² is formed in float64 from float32 products: its rounding
    error is about 1e-7·‖f‖² in float32 (1e-16·‖f‖² in float64), which matters only for updates
    almost parallel to the stream, and is below the reference's own ε clamp for ‖f‖² ≲ 10.

    Args:
        products: [K, 3, vectors] from `vector_products`.
        eps: the clamp of the squared norms.

    Returns:
        [K, 6] sums of the STREAM_METRICS.
    """
    dot, n2raw, ff = products.double().unbind(1)
    n2 = n2raw.clamp_min(eps)
    s = dot / n2
    par = (s * s * n2raw).clamp_min(eps)
    perp = (ff - 2 * s * dot + s * s * n2raw).clamp_min(eps)
    cos = dot / (n2 * ff.clamp_min(eps)).sqrt()
    return torch.stack([n2, par, perp, par / n2, perp / n2, cos], dim=1).sum(2)


def stream_stats(x: Tensor, f: Tensor, reduce: str = "feature", dims: Sequence[int] | None = None,
                 eps: float = 1e-6) -> dict[str, float]:
    """The six docs/methods.md §B.3 statistics of one (stream, update) pair, as a dict of floats.

    Args:
        x: the stream.
        f: the update.
        reduce: "feature" or "global".
        dims: the reduction dims (None: `stream_dims`).
        eps: the clamp of the squared norms.

    Returns:
        {metric: mean over vectors}.
    """
    with torch.no_grad():
        products = torch.stack(vector_products(x, f, stream_dims(x, reduce, dims))).flatten(1)
        sums = sums_from_products(products.unsqueeze(0), eps)[0]
    return dict(zip(STREAM_METRICS, (sums / products.shape[1]).tolist()))
