"""The one interface every solver in landscape.hessian takes: a symmetric dim × dim matrix applied to blocks.

    class MyOperator:                      # no base class needed
        dim = 1000                         # the matrix is dim × dim
        dtype = torch.float32              # precision of the vectors matmat takes and returns
        device = torch.device("cpu")       # where those vectors live
        def matmat(self, V):               # V [dim, k] -> A V [dim, k]
            return A @ V

`lanczos`, `slq_density`, `top_eigenpairs`, `hutchinson_trace` and `hutchpp_trace` accept any object with
these four members (structural typing: `isinstance(obj, LinearOperator)` is True without subclassing).
`HessianOperator` and `GGNOperator` are such objects. The solvers only ever call `matmat` with a whole
block, so an operator whose cost is one data pass per call should apply all k columns in that pass.

Precision. The solvers keep their vectors in the *working dtype*: the operator's dtype, except float32 for
a bfloat16 or float16 operator, whose 8- or 11-bit mantissa cannot hold an orthonormal basis (a bf16 dot
product of two unit vectors of 10⁶ entries is off by ~1e-1). `apply` casts a block to the operator's dtype,
calls `matmat` and casts the product back; every inner product over dim is summed in float64 (linalg.gram).

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
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from landscape.errors import LandscapeError

LOW_PRECISION = (torch.bfloat16, torch.float16)


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric matrix A that multiplies blocks of vectors: `matmat(V [dim, k]) -> A V [dim, k]`.

    Attributes:
        dim: the matrix is dim × dim.
        dtype: the precision `matmat` computes in.
        device: where `matmat`'s input and output live.
    """

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, V: Tensor) -> Tensor:
        """A V.

        Args:
            V: [dim, k] in `dtype` on `device`.

        Returns:
            [dim, k].
        """
        ...


def check_operator(op: object, who: str) -> LinearOperator:
    """Check that `op` has the four members of `LinearOperator`.

    Args:
        op: the candidate operator.
        who: the calling solver's name, for the message.

    Returns:
        `op` itself.

    Raises:
        LandscapeError: naming the missing members.
    """
    missing = [m for m in ("dim", "dtype", "device", "matmat") if not hasattr(op, m)]
    if missing:
        raise LandscapeError(
            f"{who}: the operator ({type(op).__name__}) lacks {', '.join(missing)}; it needs dim, dtype, "
            "device and matmat(V [dim, k]) -> [dim, k] (see landscape.hessian.solvers.protocol)"
        )
    return op  # type: ignore[return-value]


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers keep their vectors in for an operator of `dtype`.

    Args:
        dtype: the operator's dtype.

    Returns:
        float32 for bfloat16 and float16, else `dtype`.
    """
    return torch.float32 if dtype in LOW_PRECISION else dtype


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^−p for a p-bit mantissa (half of torch's eps): the relative error of one rounding.

    Args:
        dtype: a floating-point dtype.

    Returns:
        u (bfloat16 2^−8 ≈ 3.9e-3, float16 2^−11 ≈ 4.9e-4, float32 2^−24 ≈ 6e-8, float64 2^−53 ≈ 1.1e-16).
    """
    return torch.finfo(dtype).eps / 2


def apply(op: LinearOperator, rows: Tensor, out: Tensor | None = None) -> Tensor:
    """A applied to the rows of a block: `(A Xᵀ)ᵀ`, the block cast to the operator's dtype on the way in and
    back to the block's (working) dtype on the way out.

    Args:
        op: the operator.
        rows: X [k, dim] in the working dtype, on the operator's device.
        out: a contiguous [k, dim] buffer to write into (saves a fresh block per call).

    Returns:
        A X as rows [k, dim], contiguous, in `rows.dtype` on `rows.device` (`out` when given).
    """
    product = torch.as_tensor(op.matmat(rows.T.to(op.dtype)))
    if out is not None:
        return out.copy_(product.T)
    return product.to(device=rows.device, dtype=rows.dtype).T.contiguous()


@dataclass
class MatmatOperator:
    """A plain function V [dim, k] → A V made into a `LinearOperator`.

    Attributes:
        fn: the product.
        dim: the matrix size.
        dtype: the precision `fn` computes in.
        device: where `fn`'s vectors live.
    """

    fn: Callable[[Tensor], Tensor]
    dim: int
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")

    def matmat(self, V: Tensor) -> Tensor:
        """A V.

        Args:
            V: [dim, k].

        Returns:
            fn(V).
        """
        return self.fn(V)


def as_operator(fn: Callable[[Tensor], Tensor], dim: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> MatmatOperator:
    """Wrap a product function as an operator every solver takes.

    Args:
        fn: V [dim, k] → A V [dim, k] for a symmetric A.
        dim: the matrix size.
        dtype: the precision of fn's vectors.
        device: where fn's vectors live.

    Returns:
        A `MatmatOperator`.
    """
    return MatmatOperator(fn, int(dim), dtype, torch.device(device))


@runtime_checkable
class Sharding(Protocol):
    """How a sharded operator's vectors are split over processes: this process holds `local_dim` of the `dim`
    entries of every vector (its part is `local(full rows)`); `all_reduce(t)` sums a float64 tensor of partial
    sums over the processes, in place, and returns it."""

    dim: int
    local_dim: int

    def all_reduce(self, partial: Tensor) -> Tensor:
        """Sum a float64 tensor of partial sums over the processes, in place.

        Args:
            partial: this process's partial sums.

        Returns:
            The same tensor, now the total.
        """
        ...

    def local(self, rows: Tensor) -> Tensor:
        """This process's part of full vectors.

        Args:
            rows: [k, dim] full rows.

        Returns:
            [k, local_dim], the entries this process holds.
        """
        ...


_ACTIVE: ContextVar[Sharding | None] = ContextVar("landscape_sharding", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def sharding_of(op: object) -> Sharding | None:
    """The operator's `sharding` member.

    Args:
        op: any operator.

    Returns:
        Its `Sharding`, or None for an operator that holds whole vectors.
    """
    return getattr(op, "sharding", None)


def full_dim(op: object) -> int:
    """The matrix size.

    Args:
        op: any operator.

    Returns:
        `dim` of an unsharded operator, the full vector length (`sharding.dim`) of a sharded one.
    """
    s = sharding_of(op)
    return int(s.dim) if s is not None else int(op.dim)  # type: ignore[attr-defined]


@contextmanager
def sharded(op: object) -> Iterator[None]:
    """A context within which `complete`, `complete_norms` and `draw` follow `op`'s sharding.

    Args:
        op: the operator a solver runs on (one without `sharding`: whole vectors, the functions are identities).

    Yields:
        Nothing; the previous sharding is restored on exit (solvers nest).
    """
    token = _ACTIVE.set(sharding_of(op))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def over_shards(solver: F) -> F:
    """Decorate a solver whose first argument is the operator so that it runs inside `sharded(op)`.

    Args:
        solver: a function `solver(op, ...)`.

    Returns:
        The wrapped function (same signature and docstring).
    """

    @functools.wraps(solver)
    def run(op, *args, **kwargs):
        with sharded(op):
            return solver(op, *args, **kwargs)

    return run  # type: ignore[return-value]


def complete(partial: Tensor) -> Tensor:
    """Sums over this process's entries made sums over all entries.

    Args:
        partial: float64 sums over this process's part of the vectors (any shape).

    Returns:
        Their sum over the processes under a sharding (in place), the tensor itself otherwise.
    """
    s = _ACTIVE.get()
    return partial if s is None else s.all_reduce(partial)


def complete_norms(norms: Tensor) -> Tensor:
    """Norms over this process's entries made norms over all entries.

    Args:
        norms: float64 norms of this process's parts of some vectors.

    Returns:
        √(Σ over processes of their squares) under a sharding, the norms themselves otherwise.
    """
    s = _ACTIVE.get()
    return norms if s is None else s.all_reduce(norms.square()).sqrt()


def draw(sample: Callable[[int], Tensor], dim: int) -> Tensor:
    """Random rows, the same vectors whether the operator is sharded or not.

    Args:
        sample: `sample(n)` draws rows of n entries from a generator.
        dim: the rows' length here (under a sharding, its local_dim).

    Returns:
        `sample(dim)`; under a sharding, `sample(full length)` cut to this process's entries (every process
        draws the whole rows, so the generator advances alike everywhere).
    """
    s = _ACTIVE.get()
    if s is None:
        return sample(dim)
    if dim != s.local_dim:
        raise LandscapeError(f"a sharded operator's vectors have {s.local_dim} local entries, not {dim}")
    return s.local(sample(int(s.dim)))
