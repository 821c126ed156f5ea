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

Sharded operators (FSDP: each process holds a part of every vector) add one member, `sharding` (a
`Sharding`): `dim` is then the length of this process's part, the only length matmat sees. Every solver
runs inside `sharded(op)` (the `over_shards` decorator): the sums over dim that make inner products and
norms are completed across the processes in float64 (`complete`), random vectors are drawn over the full
length and cut to this process's part (`draw`), so every process holds its part of the same vectors and
the solver's coefficients, and its results, equal an unsharded run's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, runtime_checkable

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


@runtime_checkable
class Sharding(Protocol):
    """How a sharded operator's vectors are split over processes: this process holds `local_dim` of the `dim`
    entries of every vector (its part is `local(full rows)`); `all_reduce(t)` sums a float64 tensor of partial
    sums over the processes, in place, and returns it."""

    dim: int
    local_dim: int

    def all_reduce(self, partial: Tensor) -> Tensor: ...

    def local(self, rows: Tensor) -> Tensor: ...


_ACTIVE: ContextVar[Sharding | None] = ContextVar("landscape_sharding", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def sharding_of(op: object) -> Sharding | None:
    """The operator's `sharding`, or None for an operator that holds whole vectors."""
    return getattr(op, "sharding", None)


def full_dim(op: object) -> int:
    """The matrix size: `dim` of an unsharded operator, the full vector length of a sharded one."""
    s = sharding_of(op)
    return int(s.dim) if s is not None else int(op.dim)  # type: ignore[attr-defined]


@contextmanager
def sharded(op: object) -> Iterator[None]:
    """Within, `complete` and `draw` follow `op`'s sharding (an operator without one: whole vectors)."""
    token = _ACTIVE.set(sharding_of(op))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def over_shards(solver: F) -> F:
    """Decorate a solver whose first argument is the operator: it runs inside `sharded(op)`."""

    @functools.wraps(solver)
    def run(op, *args, **kwargs):
        with sharded(op):
            return solver(op, *args, **kwargs)

    return run  # type: ignore[return-value]


def complete(partial: Tensor) -> Tensor:
    """Sums over this process's entries (float64) made sums over all entries: Σ over processes under a
    sharding, the tensor itself otherwise."""
    s = _ACTIVE.get()
    return partial if s is None else s.all_reduce(partial)


def complete_norms(norms: Tensor) -> Tensor:
    """Norms over this process's entries (float64) made norms over all entries: √(Σ over processes of their
    squares) under a sharding, the norms themselves otherwise."""
    s = _ACTIVE.get()
    return norms if s is None else s.all_reduce(norms.square()).sqrt()


def draw(sample: Callable[[int], Tensor], dim: int) -> Tensor:
    """Random rows: `sample(n)` → rows over n entries. Under a sharding (dim = its local_dim) they are drawn
    over the full length and cut to this process's entries, the same vectors an unsharded run draws."""
    s = _ACTIVE.get()
    if s is None:
        return sample(dim)
    if dim != s.local_dim:
        raise LandscapeError(f"a sharded operator's vectors have {s.local_dim} local entries, not {dim}")
    return s.local(sample(int(s.dim)))
