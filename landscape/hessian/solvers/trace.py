"""Stochastic trace estimates with standard errors; Rademacher vectors go through `matmat` in batches.

Hutchinson (1989):  tr(A) ≈ (1/n) Σ_i z_iᵀ A z_i,   z_i ∈ {±1}^dim,   stderr = std(z_iᵀAz_i)/√n
Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Alg. 1), m products split in thirds:
    Q = orth(A S)  (S: m/3 vectors),   tr(A) ≈ tr(Qᵀ A Q) + (3/m) Σ_i g_iᵀ (I−QQᵀ) A (I−QQᵀ) g_i
The low-rank part is exact for the top of the spectrum, so Hutch++ wins when a few eigenvalues
dominate; its standard error is that of the Hutchinson part on the deflated matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.solvers.linalg import gram, orthonormalize, rademacher, row_dots
from landscape.hessian.solvers.protocol import LinearOperator, apply, check_operator, over_shards, working_dtype


@dataclass
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        trace: the estimate (low-rank part + mean of the Hutchinson terms).
        stderr: sd/√n of the Hutchinson terms (nan with one).
        samples: the per-vector terms zᵢᵀ A zᵢ.
        low_rank: the exact tr(QᵀAQ) part (Hutch++; 0 for Hutchinson).
        n_products: matrix-vector products used.
        method: "hutchinson" or "hutch++".
    """

    trace: float
    stderr: float
    samples: np.ndarray
    low_rank: float
    n_products: int
    method: str

    def to_dict(self) -> dict:
        """The numbers as JSON-able values (without the per-vector samples)."""
        return {
            "trace": self.trace,
            "stderr": self.stderr,
            "n_products": self.n_products,
            "method": self.method,
            "low_rank": self.low_rank,
        }


def _quadratic_forms(op: LinearOperator, Z: Tensor, batch: int) -> np.ndarray:
    """z_iᵀ A z_i for the columns of Z (in the working dtype), `batch` columns per matmat."""
    out = []
    for Zb in Z.split(batch, dim=1):
        rows = Zb.T.contiguous()
        out.append(row_dots(rows, apply(op, rows)))
    return torch.cat(out).cpu().numpy()


def _vectors(op: LinearOperator, n: int, gen: torch.Generator) -> Tensor:
    """n Rademacher vectors as columns [dim, n] in the solvers' working dtype (float32 for a half operator)."""
    return rademacher(n, op.dim, gen).T.to(device=op.device, dtype=working_dtype(op.dtype))


def _stderr(samples: np.ndarray) -> float:
    return float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")


@over_shards
def hutchinson_trace(op: LinearOperator, vectors: int = 100, seed: int = 0, batch: int = 16) -> TraceEstimate:
    """Hutchinson's estimate tr(A) ≈ (1/n) Σ zᵢᵀ A zᵢ with Rademacher zᵢ.

    Memory: (n + 2·batch) · P numbers of the operator's dtype (the vectors, one product block and its
    elementwise product), whatever the number of data passes.

    Args:
        op: the operator.
        vectors: n.
        seed: seed of the vectors.
        batch: vectors per matmat.

    Returns:
        A `TraceEstimate`.
    """
    check_operator(op, "hutchinson_trace")
    if vectors < 1:
        raise LandscapeError(f"hutchinson_trace: vectors must be at least 1, got {vectors}")
    gen = torch.Generator().manual_seed(seed)
    s = _quadratic_forms(op, _vectors(op, vectors, gen), batch)
    return TraceEstimate(float(s.mean()), _stderr(s), s, 0.0, vectors, "hutchinson")


@over_shards
def hutchpp_trace(op: LinearOperator, products: int = 99, seed: int = 0, batch: int = 16) -> TraceEstimate:
    """Hutch++ (module docstring) with `products` matrix-vector products in all: a third each for the sketch,
    the low-rank trace and the Hutchinson part on the deflated matrix.

    Memory: about (4t + 2·batch) · P numbers, t = products // 3 (S, G, the sketch A S and its basis Q).

    Args:
        op: the operator.
        products: matrix-vector products in all (at least 3).
        seed: seed of the vectors.
        batch: vectors per matmat.

    Returns:
        A `TraceEstimate` whose stderr is the Hutchinson part's.
    """
    check_operator(op, "hutchpp_trace")
    third = products // 3
    if third < 1:
        raise LandscapeError(f"hutchpp_trace: products must be at least 3, got {products}")
    gen = torch.Generator().manual_seed(seed)
    S, G = _vectors(op, third, gen), _vectors(op, third, gen)
    AS = torch.cat([apply(op, Sb.T.contiguous()) for Sb in S.split(batch, dim=1)])  # rows [t, dim]
    Q = orthonormalize(AS, AS[:0], gen).T  # Cholesky QR, float64 Gram sums (sharded vectors too)
    low = float(row_dots(Q.T, torch.cat([apply(op, Qb.T.contiguous()) for Qb in Q.split(batch, dim=1)])).sum())
    G = G - Q @ gram(Q.T, G.T).to(device=G.device, dtype=G.dtype)
    s = _quadratic_forms(op, G, batch)
    return TraceEstimate(low + float(s.mean()), _stderr(s), s, low, 3 * third, "hutch++")
