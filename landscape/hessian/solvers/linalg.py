"""Inner products of long float32 vectors that stay accurate: float32 pieces of 1024 terms summed in float64.

A plain float32 dot product of two unit vectors with 10⁷ entries is off by ~1e-3 (measured: the
running sum's rounding grows with its length); summing 1024-term pieces in float64 brings it to ~1e-9
at the speed of one float32 matmul (a batched matmul over the pieces, no float64 copy of the data).
On a sharded operator's vectors (`protocol.Sharding`) the float64 sums are completed across processes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.hessian.solvers.protocol import complete, complete_norms

_CHUNK = 1024


def gram(A: Tensor, B: Tensor) -> Tensor:
    """A Bᵀ for row blocks A [a, dim], B [b, dim] as float64 on the CPU. In low precision the sum over
    dim is split into float32 pieces of 1024 terms (one batched matmul) added in float64: a plain
    float32 matmul of two unit vectors of 10⁷ entries is off by ~1e-3, this by ~1e-9."""
    if A.dtype == torch.float64 or A.shape[1] <= _CHUNK:
        return complete((A @ B.T).double().cpu())
    A, B = A.contiguous(), B.contiguous()
    n = A.shape[1] // _CHUNK * _CHUNK
    Av = A[:, :n].view(A.shape[0], -1, _CHUNK).transpose(0, 1)
    Bv = B[:, :n].view(B.shape[0], -1, _CHUNK).transpose(0, 1)
    out = torch.bmm(Av, Bv.transpose(1, 2)).double().sum(0)
    if n < A.shape[1]:
        out += (A[:, n:] @ B[:, n:].T).double()
    return complete(out.cpu())


def row_norms(X: Tensor) -> Tensor:
    """Row norms (float64): float32 pieces of 1024 terms summed in float64 (no float64 copy of X)."""
    if X.dtype == torch.float64 or X.shape[1] <= _CHUNK:
        return complete_norms(torch.linalg.vector_norm(X, dim=1, dtype=torch.float64))
    X = X.contiguous()
    n = X.shape[1] // _CHUNK * _CHUNK
    sq = torch.linalg.vector_norm(X[:, :n].view(X.shape[0], -1, _CHUNK), dim=2).double().square().sum(1)
    if n < X.shape[1]:
        sq += torch.linalg.vector_norm(X[:, n:], dim=1).double().square()
    return complete_norms(sq.sqrt())


def row_dots(A: Tensor, B: Tensor) -> Tensor:
    """a_iᵀ b_i for each row pair [k] (float64, on A's device), summed in float64."""
    return complete(torch.sum(A * B, dim=1, dtype=torch.float64))
