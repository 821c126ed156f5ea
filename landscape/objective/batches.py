"""One data normalizer: every form `data` may take, as a re-iterable sequence of `Batch`es.

Accepted `data` (each engine takes the same forms):
- a tensor X (inputs only), an (X, y) pair (X a tensor or a tuple of tensors: positional inputs; y a tensor
  or None), an object with tensor attributes `X` and `y` (`landscape.data.TensorData`); inside a list or a
  loader also an (X,) tuple (what a DataLoader of a one-tensor TensorDataset yields);
- a mapping of tensors, e.g. an HF batch {"input_ids", "attention_mask", "labels"} (keyword inputs; the
  key "labels" holds the targets);
- a list or tuple of such batches, a re-iterable of them (a DataLoader: read anew on every pass) or a
  one-shot iterator (read once and kept).
The first dimension of the first tensor input counts a batch's samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from landscape.errors import LandscapeError

LABELS = "labels"
"""The key of a mapping batch that holds the targets (HF's convention)."""


@dataclass(frozen=True)
class Batch:
    """One batch: positional inputs `args`, keyword inputs `kwargs`, and `targets` (None when absent).

    `model(*args, **kwargs)` is the forward; the loss reads `targets`.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    targets: Any = None

    @property
    def size(self) -> int:
        """Samples in the batch: the first dimension of the first tensor input."""
        first = next((t for t in (*self.args, *self.kwargs.values()) if isinstance(t, Tensor)), None)
        if first is None or first.dim() == 0:
            raise LandscapeError("data: a batch needs a tensor input with a leading sample dimension")
        return int(first.shape[0])

    def tensors(self) -> list[Any]:
        """Every input and the targets, in a fixed order (for concatenating and splitting)."""
        return [*self.args, *self.kwargs.values(), self.targets]

    def with_tensors(self, values: list[Any]) -> Batch:
        """This batch's structure holding `values` (the order of `tensors()`).

        Args:
            values: tensors in the order of `tensors()`.

        Returns:
            The new batch.
        """
        n, k = len(self.args), len(self.kwargs)
        return Batch(tuple(values[:n]), dict(zip(self.kwargs, values[n:n + k])), values[n + k])

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Batch:
        """The batch on `device`, floating tensors cast to `dtype` (the model's, so a float64 model takes
        float32 data).

        Args:
            device: the target device.
            dtype: the floating dtype (None: unchanged).

        Returns:
            The moved batch.
        """

        def move(t: Any) -> Any:
            if isinstance(t, Tensor):
                cast = dtype if dtype is not None and t.is_floating_point() else None
                return t.to(device=device, dtype=cast, non_blocking=True)
            return t

        return self.with_tensors([move(t) for t in self.tensors()])

    def split(self, pieces: int | None = None, size: int | None = None) -> list[Batch]:
        """The batch cut along its samples into `pieces` parts, or parts of `size` samples (itself when it
        cannot be cut: a non-tensor input).

        Args:
            pieces: the number of parts (`tensor_split`: sizes differ by at most one).
            size: samples per part (used when `pieces` is None).

        Returns:
            The parts.
        """
        values = self.tensors()
        n = self.size
        if not all(isinstance(t, Tensor) and t.dim() and t.shape[0] == n for t in values if t is not None):
            return [self]
        cut = [t.tensor_split(pieces) if size is None else t.split(size) if t is not None else None
               for t in values]
        count = len(next(c for c in cut if c is not None))
        parts = [self.with_tensors([None if c is None else c[i] for c in cut]) for i in range(count)]
        return [p for p in parts if p.size]

    def select(self, index: Tensor | slice) -> Batch:
        """The samples `index` of the batch (a slice or an index tensor along dim 0).

        Args:
            index: a slice or an index tensor.

        Returns:
            The selected batch.
        """
        return self.with_tensors([t[index] if isinstance(t, Tensor) else t for t in self.tensors()])


def concatenable(batches: list[Batch]) -> bool:
    """Whether `concat` applies: the same structure, every value a tensor with equal trailing shapes.

    Args:
        batches: prepared batches.

    Returns:
        True when they can be concatenated.
    """
    first = batches[0]
    if any(len(b.args) != len(first.args) or list(b.kwargs) != list(first.kwargs) for b in batches):
        return False
    for values in zip(*(b.tensors() for b in batches)):
        if all(v is None for v in values):
            continue
        if not all(isinstance(v, Tensor) and v.dim() and v.shape[1:] == values[0].shape[1:] for v in values):
            return False
    return True


def concat(batches: list[Batch]) -> Batch:
    """One batch holding the samples of `batches` in order (see `concatenable`).

    Args:
        batches: concatenable batches.

    Returns:
        The joined batch.
    """
    if len(batches) == 1:
        return batches[0]
    joined = [None if values[0] is None else torch.cat(values) for values in zip(*(b.tensors() for b in batches))]
    return batches[0].with_tensors(joined)


def as_batch(item: Any) -> Batch:
    """One batch from a tensor, an (X, y) pair or (X,) tuple, a mapping, or an object with `.X`/`.y`.

    Args:
        item: one element of the data.

    Returns:
        The `Batch`.
    """
    if isinstance(item, Batch):
        return item
    if isinstance(item, Tensor):
        return Batch((item,))
    if isinstance(item, Mapping):
        kwargs = dict(item)
        targets = kwargs.pop(LABELS, None)
        if not kwargs:
            raise LandscapeError("data: a mapping batch needs model inputs besides 'labels'")
        return Batch((), kwargs, targets)
    if isinstance(getattr(item, "X", None), Tensor):
        return Batch((item.X,), {}, getattr(item, "y", None))
    if isinstance(item, (tuple, list)) and len(item) in (1, 2):
        x = item[0]
        y = item[1] if len(item) == 2 else None
        args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if all(isinstance(a, Tensor) for a in args) and (y is None or isinstance(y, Tensor)):
            return Batch(args, {}, y)
    what = f"a {type(item).__name__} of {len(item)} items" if isinstance(item, (tuple, list)) else type(item).__name__
    raise LandscapeError(f"data: cannot read a batch from {what}; a batch is a tensor, an (inputs, targets) pair "
                         "or a mapping of tensors such as {'input_ids': ..., 'labels': ...}")


def _is_one_batch(data: Any) -> bool:
    """A single batch (not a collection of batches): a tensor, a mapping, a TensorData, or an (X, y) pair whose
    X is a tensor or a tuple of tensors and y a tensor or None. (A list of two token tensors reads as one
    (inputs, targets) pair: pass such batches as dicts.)"""
    if isinstance(data, (Tensor, Mapping)) or isinstance(getattr(data, "X", None), Tensor):
        return True
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    inputs_ok = isinstance(x, Tensor) or (isinstance(x, (tuple, list)) and x and all(isinstance(t, Tensor) for t in x))
    return inputs_ok and (y is None or isinstance(y, Tensor))


class Batches:
    """A re-iterable sequence of `Batch`es from any accepted form of `data` (see the module docstring).

    Args:
        data: the data in any accepted form.
        batch_size: cut in-memory batches into batches of at most this many samples (None: as given).
    """

    def __init__(self, data: Any, batch_size: int | None = None):
        if isinstance(data, Batches):
            data = data._held if data._held is not None else data._iterable
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise LandscapeError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self._iterable: Iterable | None = None
        self._held: list[Batch] | None = None
        if data is None:
            raise LandscapeError("data: none given")
        if _is_one_batch(data):
            self._held = [as_batch(data)]
        elif isinstance(data, (list, tuple, Iterator)):
            self._held = [as_batch(b) for b in data]
        elif isinstance(data, Iterable):
            self._iterable = data
        else:
            raise LandscapeError("data: expected a batch, a list of batches or a DataLoader, got "
                                 f"{type(data).__name__}")
        if self._held is not None:
            if not self._held:
                raise LandscapeError("no data: the data holds no batches")
            if batch_size is not None:
                self._held = [p for b in self._held for p in b.split(size=batch_size)]

    @property
    def materialized(self) -> bool:
        """True when the batches are held in memory (no loader runs on each pass)."""
        return self._held is not None

    def __iter__(self) -> Iterator[Batch]:
        if self._held is not None:
            yield from self._held
            return
        for item in self._iterable:
            batch = as_batch(item)
            yield from (batch.split(size=self.batch_size) if self.batch_size else [batch])

    def first(self, n: int = 1) -> list[Batch]:
        """The first `n` batches (fewer when the data has fewer).

        Args:
            n: how many.

        Returns:
            The batches.
        """
        out = []
        for b in self:
            out.append(b)
            if len(out) == n:
                break
        if not out:
            raise LandscapeError("no data: the data holds no batches")
        return out
