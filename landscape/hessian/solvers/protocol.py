"""The one interface every solver in landscape.hessian takes: a symmetric dim × dim matrix applied to blocks.

    class MyOperator:                      # no base class needed
        dim = 1000                         # the matrix is dim × dim
        dtype = torch.float32              # precision of the vectors the solver hands to matmat
        device = torch.device("cpu")       # where those vectors live
        def matmat(self, V):               # V [dim, k] -> A V [dim, k]
            return A @ V

`lanczos`, `slq_density`, `top_eigenpairs`, `hutchinson_trace` and `hutchpp_trace` accept any object with
these four members (structural typing: `isinstance(obj, LinearOperator)` is True without subclassing).
`HessianOperator` and `GGNOperator` are such objects. The solvers only ever call `matmat` with a whole
block, so an operator whose cost is one data pass per call should apply all k columns in that pass.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from landscape.errors import LandscapeError


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric matrix that multiplies blocks of vectors: `matmat(V [dim, k]) -> [dim, k]`."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, V: Tensor) -> Tensor: ...


def check_operator(op: object, who: str) -> LinearOperator:
    """`op` itself if it has the four members; otherwise a LandscapeError naming the missing ones."""
    missing = [m for m in ("dim", "dtype", "device", "matmat") if not hasattr(op, m)]
    if missing:
        raise LandscapeError(
            f"{who}: the operator ({type(op).__name__}) lacks {', '.join(missing)}; it needs dim, dtype, "
            "device and matmat(V [dim, k]) -> [dim, k] (see landscape.hessian.solvers.protocol)"
        )
    return op  # type: ignore[return-value]
