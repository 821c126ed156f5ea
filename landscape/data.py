"""Named data sets as device-resident tensors: MNIST-1D (default, generated offline) and CIFAR-10/100, SVHN.

`load_data(...)` returns a `TensorData` whose whole split lives on one device, normalized per channel
with the mean and standard deviation of the *training* split:  x ← (x − μ_c) / σ_c.

- MNIST-1D (Greydanus 2020) is generated with `mnist1d.data.make_dataset` (never downloaded) and cached
  as `.npz` under `$LANDSCAPE_CACHE` (default `~/.cache/landscape`). `n_samples` is the training-set size
  (default 4,000); the test split is the next `n_samples // 4` samples of the same generation, so
  `seed=42, n_samples=4000` reproduces the published 4,000 / 1,000 split.
- CIFAR-10, CIFAR-100 (`cifar100` fine labels, `cifar100-coarse` the 20 superclasses) and SVHN are read
  from their original files under `root` with a restricted unpickler / `scipy.io.loadmat`; torchvision is
  needed only to download them (`download=True`). `n_samples` keeps the first n training images.

The files and the generator are read by `landscape.datasets`; this module makes tensors of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from landscape import distributed
from landscape.datasets import cache_dir, cifar_arrays, mnist1d_arrays, read_cifar_batch, svhn_arrays
from landscape.errors import LandscapeError

__all__ = ["DATASETS", "MEASUREMENT_RULE", "MEASUREMENT_SEED", "MNIST1D_TRAIN", "TensorData", "cache_dir",
           "crop_flip", "load_data", "measurement_set", "measurement_set_record", "part_slice",
           "read_cifar_batch", "shard"]

DATASETS = ("mnist1d", "cifar10", "cifar100", "cifar100-coarse", "svhn")
MNIST1D_TRAIN = 4000


@dataclass
class TensorData:
    """One split of a data set on one device.

    Args:
        X: inputs [N, ...].
        y: integer labels [N].
        n_classes: the number of classes.
        spec: JSON-able; `load_data(**spec)` loads the same split again.
        mean: the per-channel mean of the training split that X was normalized with.
        std: the per-channel standard deviation of the training split.
    """

    X: Tensor
    y: Tensor
    n_classes: int
    spec: dict
    mean: Tensor
    std: Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        """The device the tensors are on."""
        return self.X.device

    def to(self, device: str | torch.device) -> TensorData:
        """A copy on another device.

        Args:
            device: the target device.

        Returns:
            The `TensorData` there.
        """
        return TensorData(self.X.to(device), self.y.to(device), self.n_classes, dict(self.spec),
                          self.mean.to(device), self.std.to(device))

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, part: tuple[int, int] = (0, 1)) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (X, y) minibatches on the data's device; the last batch may be smaller.

        `shuffle` draws one permutation per call from `generator` (CPU); `augment` applies a random
        reflect-pad-4 crop and a horizontal flip per image (images only), drawn from the same generator.
        `part=(r, W)` yields only the r-th of W contiguous slices of each batch (`part_slice`: sizes differ by
        at most one) while every random draw is still made for the whole batch, so the W parts of a batch
        are exactly the unsplit batch: torch.distributed ranks see the single-process data order.

        Args:
            batch_size: samples per batch.
            shuffle: draw the order from `generator`.
            generator: the CPU generator of the shuffle and the augmentation.
            augment: random crop and flip of each image.
            part: (r, W): only the r-th of W contiguous slices of each batch.

        Returns:
            An iterator of (X, y) batches.
        """
        if batch_size < 1:
            raise LandscapeError(f"batch size must be positive, got {batch_size}")
        index, count = part
        if not 0 <= index < count:
            raise LandscapeError(f"part must be (index, count) with 0 <= index < count, got {part}")
        if augment and self.X.dim() != 4:
            raise LandscapeError(f"augmentation (crop + flip) needs images [N, C, H, W]; "
                                 f"{self.spec.get('name')} has shape {tuple(self.X.shape)}")
        n = len(self.y)
        order = torch.randperm(n, generator=generator).to(self.X.device) if shuffle else None
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            mine = part_slice(size, index, count)
            lo, hi = start + mine.start, start + mine.stop
            if order is None:
                X, y = self.X[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                X, y = self.X[idx], self.y[idx]
            yield (crop_flip(X, generator=generator, within=(mine.start, size)) if augment else X), y


MEASUREMENT_SEED = 0
MEASUREMENT_RULE = "torch.randperm(N, generator seeded 0)[:n]"


def measurement_set(data: TensorData, n: int) -> tuple[Tensor, Tensor]:
    """The measurement set: the fixed training samples that measurements during and after training use.

    The first n samples of one permutation of the N samples, `torch.randperm(N)` from a CPU generator seeded
    with `MEASUREMENT_SEED` (0): the same set for every run, model and seed on one data set (comparisons
    between runs see the same inputs), nested (a smaller set is a prefix of a larger one, so every size is
    drawn from the same permutation), and independent of the order the data set is stored in (the first n
    of a set sorted by class would hold one class). Outputs record it with `measurement_set_record`.

    Args:
        data: the training split.
        n: the number of samples (all N when n ≥ N).

    Returns:
        (X, y) of the min(n, N) samples, on the data's device, in the permutation's order.
    """
    if n < 1:
        raise LandscapeError(f"the measurement set needs at least 1 sample, got {n}")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(MEASUREMENT_SEED))[:n]
    idx = idx.to(data.device)
    return data.X[idx], data.y[idx]


def measurement_set_record(n: int, total: int | None = None) -> dict:
    """How a measurement set was drawn, for an output file (docs/formats.md).

    Args:
        n: the samples asked for (or taken).
        total: N, the samples of the split it was drawn from (None: not recorded).

    Returns:
        {"samples": min(n, N), "of": N, "rule": `MEASUREMENT_RULE`} ("of" only with `total`).
    """
    if total is None:
        return {"samples": n, "rule": MEASUREMENT_RULE}
    return {"samples": min(n, total), "of": total, "rule": MEASUREMENT_RULE}


def part_slice(n: int, index: int, count: int) -> slice:
    """One of `count` contiguous, near-equal slices of range(n).

    Args:
        n: the length.
        index: i, which slice (0 ≤ i < count).
        count: c, how many slices.

    Returns:
        slice(⌊n·i/c⌋, ⌊n·(i+1)/c⌋).
    """
    return slice(n * index // count, n * (index + 1) // count)


def shard(data: TensorData, index: int | None = None, count: int | None = None) -> TensorData:
    """Rank `index` of `count`'s contiguous share of the samples (default: this rank of the group).

    Shares are near-equal (`part_slice`) and together hold every sample once, in order; a
    rank's share may be empty when there are fewer samples than ranks. Divide sums by `len(data)`, the
    global count, not by the shard's length.

    Args:
        data: the whole split.
        index: the rank (default: this process's).
        count: the number of ranks (default: the group's size).

    Returns:
        The share as a `TensorData`.
    """
    index = distributed.rank() if index is None else index
    count = distributed.world_size() if count is None else count
    if not 0 <= index < count:
        raise LandscapeError(f"shard index must lie in [0, {count}), got {index}")
    part = part_slice(len(data), index, count)
    return TensorData(data.X[part], data.y[part], data.n_classes, dict(data.spec), data.mean, data.std)


def crop_flip(X: Tensor, pad: int = 4, generator: torch.Generator | None = None,
              within: tuple[int, int] | None = None) -> Tensor:
    """Random `pad`-pixel reflect-padded crop and horizontal flip of each image in X [B, C, H, W].

    One gather: output[b, :, i, j] = P[b, :, dy_b + i, dx_b + (W−1−j if flip_b else j)], P the padded batch.
    `within=(first, total)`: X holds rows first..first+B of a batch of `total` images; the draws are made
    for all `total` and X gets its rows' share (the draws of the whole batch, split across processes).

    Args:
        X: images [B, C, H, W].
        pad: the padding (and the largest shift) in pixels.
        generator: the CPU generator of the draws.
        within: (first, total) as above.

    Returns:
        The augmented images [B, C, H, W].
    """
    B, C, H, W = X.shape
    first, total = within if within is not None else (0, B)
    offsets = torch.randint(0, 2 * pad + 1, (2, total), generator=generator)[:, first:first + B].to(X.device)
    flip = (torch.rand(total, generator=generator) < 0.5)[first:first + B].to(X.device)
    padded = F.pad(X, (pad, pad, pad, pad), mode="reflect")
    cols = torch.arange(W, device=X.device)
    cols = torch.where(flip[:, None], W - 1 - cols, cols)                    # [B, W]
    rows = offsets[0][:, None] + torch.arange(H, device=X.device)            # [B, H]
    cols = offsets[1][:, None] + cols
    out = padded[torch.arange(B, device=X.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()                              # [B, H, W, C] -> [B, C, H, W]


def load_data(name: str = "mnist1d", split: str = "train", n_samples: int | None = None,
              root: str | os.PathLike | None = None, device: str | torch.device = "cpu", seed: int = 0,
              download: bool = False, normalize: bool = True) -> TensorData:
    """Load one split of a named data set onto `device` (see the module docstring for each set).

    Args:
        name: one of `DATASETS`.
        split: "train" or "test".
        n_samples: training-set size (MNIST-1D: generated size, default 4,000; images: first n of train).
        root: directory of the image files (default `<cache dir>/data`).
        device: where the tensors go.
        seed: MNIST-1D generation seed (the image sets are fixed files and ignore it).
        download: download a missing image set (needs torchvision).
        normalize: normalize per channel with the training split's mean and standard deviation.

    Returns:
        The split as a `TensorData`.
    """
    if name not in DATASETS:
        raise LandscapeError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise LandscapeError(f"split must be 'train' or 'test', got {split!r}")
    if n_samples is not None and n_samples < 1:
        raise LandscapeError(f"n_samples must be positive, got {n_samples}")
    if name == "mnist1d":
        train_x, train_y, test_x, test_y = mnist1d_arrays(n_samples or MNIST1D_TRAIN, seed)
        n_classes = 10
        x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
        stat_axes: tuple[int, ...] = (0, 1)
    else:
        base = Path(root) if root is not None else cache_dir() / "data"
        reader = svhn_arrays if name == "svhn" else cifar_arrays
        x, y, n_classes = reader(name, base, split, download)
        train_x = x if split == "train" else reader(name, base, "train", download)[0]
        if n_samples is not None:
            if n_samples > len(train_x):
                raise LandscapeError(f"n_samples={n_samples} exceeds the {len(train_x)} training images "
                                     f"of {name}")
            train_x = train_x[:n_samples]
            if split == "train":
                x, y = x[:n_samples], y[:n_samples]
        stat_axes = (0, 2, 3)
    _check_split(name, split, x, y, n_classes)
    mean, std = _channel_stats(train_x, stat_axes)
    x_t = torch.from_numpy(np.ascontiguousarray(x)).float()
    if x.dtype == np.uint8:
        x_t.div_(255.0)
    if normalize:
        shape = (1, -1, 1, 1) if x_t.dim() == 4 else (1, -1)
        x_t.sub_(mean.view(shape)).div_(std.view(shape))
    spec = {"name": name, "split": split, "n_samples": n_samples, "root": None if root is None else str(root),
            "seed": seed, "normalize": normalize}
    return TensorData(x_t.to(device), torch.as_tensor(np.asarray(y), dtype=torch.int64).to(device),
                      n_classes, spec, mean.to(device), std.to(device))


def _check_split(name: str, split: str, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
    """Refuse an empty split, X/y of different lengths and labels outside [0, n_classes)."""
    if len(x) == 0:
        raise LandscapeError(f"{name} {split} split has no samples")
    if len(x) != len(y):
        raise LandscapeError(f"{name} {split} split has {len(x)} inputs but {len(y)} labels")
    bad = y[(y < 0) | (y >= n_classes)]
    if len(bad):
        raise LandscapeError(f"{name} {split} labels must lie in [0, {n_classes}), found {int(bad[0])} "
                             f"({len(bad)} of {len(y)} labels out of range)")


def _channel_stats(x: np.ndarray, axes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (population) std of the training split in float64, returned as float32.

    uint8 images are scaled to [0, 1] and counted by a 256-bin histogram per channel: exact, no float copy.
    """
    if x.dtype == np.uint8:
        levels = np.arange(256) / 255.0
        counts = np.stack([np.bincount(x[:, c].ravel(), minlength=256) for c in range(x.shape[1])])
        mean = counts @ levels / counts.sum(1)
        var = counts @ levels**2 / counts.sum(1) - mean**2
    else:
        xs = x.astype(np.float64)
        mean, var = np.atleast_1d(xs.mean(axis=axes)), np.atleast_1d(xs.var(axis=axes))
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()
