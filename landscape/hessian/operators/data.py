"""Plumbing: the forms `data` may take, moving batches to the model, and the one cross-sample reduction.

Accepted `data`: an (X, y) pair of tensors; an object with tensor attributes `X` and `y` (e.g.
`landscape.data.TensorData`); a list/tuple of (X, y) batches; any re-iterable of batches (a
DataLoader); a one-shot iterator (materialized once into a list). X may be a tensor or a tuple of
tensors (positional model inputs); its first dimension counts the samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from landscape.errors import LandscapeError

Batch = tuple[Any, Any]


def _is_pair(data: Any) -> bool:
    """(X, y) with X a tensor, or (tuple of input tensors, y tensor); a list of two batches is not."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    if isinstance(x, Tensor):
        return True
    return isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x) and isinstance(y, Tensor)


class DataSource:
    """A re-iterable sequence of (inputs, targets) batches built from any accepted form of `data`."""

    def __init__(self, data: Any):
        if isinstance(getattr(data, "X", None), Tensor) and isinstance(getattr(data, "y", None), Tensor):
            data = (data.X, data.y)
        if _is_pair(data):
            self._batches: list[Batch] | None = [tuple(data)]
            self._iterable: Iterable | None = None
        elif isinstance(data, (list, tuple)):
            self._batches, self._iterable = [tuple(b) for b in data], None
        elif isinstance(data, Iterator):
            self._batches, self._iterable = [tuple(b) for b in data], None
        elif isinstance(data, Iterable):
            self._batches, self._iterable = None, data
        else:
            raise LandscapeError(f"data: expected an (X, y) pair or batches of them, got {type(data).__name__}")
        if self._batches is not None:
            if not self._batches:
                raise LandscapeError("data: no batches")
            for b in self._batches:
                if len(b) != 2:
                    raise LandscapeError(f"data: each batch must be an (inputs, targets) pair, got {len(b)} items")

    @property
    def materialized(self) -> bool:
        """True when the batches are held in a list (no loader runs on each pass)."""
        return self._batches is not None

    def __iter__(self) -> Iterator[Batch]:
        if self._batches is not None:
            yield from self._batches
            return
        for b in self._iterable:
            b = tuple(b)
            if len(b) != 2:
                raise LandscapeError(f"data: each batch must be an (inputs, targets) pair, got {len(b)} items")
            yield b

    def first(self, n: int = 1) -> list[Batch]:
        """The first `n` batches (fewer when the data has fewer)."""
        out = []
        for b in self:
            out.append(b)
            if len(out) == n:
                break
        if not out:
            raise LandscapeError("data: no batches")
        return out


def as_args(inputs: Any) -> tuple:
    """Model positional arguments from a batch's inputs."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def batch_size(inputs: Any) -> int:
    """Samples in a batch: the first dimension of its (first) input tensor."""
    first = as_args(inputs)[0]
    if not isinstance(first, Tensor) or first.dim() == 0:
        raise LandscapeError("data: inputs must be tensors with a leading sample dimension")
    return int(first.shape[0])


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move a batch to `device`; floating tensors are cast to the operator's `dtype`."""

    def move(t: Any) -> Any:
        if isinstance(t, Tensor):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None, non_blocking=True)
        if isinstance(t, (tuple, list)):
            return type(t)(move(u) for u in t)
        return t

    return move(batch[0]), move(batch[1])


def concat(batches: list[Batch]) -> Batch:
    """One batch holding the samples of `batches` in order (tensors concatenated along dim 0)."""
    if len(batches) == 1:
        return batches[0]
    xs = [as_args(b[0]) for b in batches]
    inputs = tuple(torch.cat([x[i] for x in xs]) for i in range(len(xs[0])))
    targets = torch.cat([b[1] for b in batches])
    return (inputs if isinstance(batches[0][0], (tuple, list)) else inputs[0]), targets


def concatenable(batches: list[Batch]) -> bool:
    """Whether `concat` applies: every input and target is a tensor."""
    return all(all(isinstance(t, Tensor) for t in as_args(b[0])) and isinstance(b[1], Tensor) for b in batches)


def sample_average(total: Tensor, count: int) -> Tensor:
    """Σ_batches n_b·(per-batch mean) / N: the average of summed per-batch products over N samples."""
    if count == 0:
        raise LandscapeError("data: no samples")
    return total / count


def reduce_samples(total: Tensor, count: int) -> tuple[Tensor, int]:
    """(Σ_r total_r, Σ_r count_r) over the ranks of torch.distributed: the only cross-rank reduction.

    Each rank passes its shard's sum and sample count; one all_reduce adds them all, the count packed in
    the same tensor as 8 base-16 digits (exact in any float dtype, up to 2³² samples).
    """
    from landscape.distributed import all_reduce_sum

    digits = torch.tensor([(count >> (4 * i)) & 15 for i in range(_COUNT_DIGITS)], dtype=total.dtype,
                          device=total.device)
    packed = all_reduce_sum(torch.cat([total.reshape(-1), digits]))
    count = sum(round(d) << (4 * i) for i, d in enumerate(packed[total.numel():].tolist()))
    return packed[: total.numel()].reshape(total.shape), count


_COUNT_DIGITS = 8
