"""Train/eval flags put back exactly: the one context manager every measurement runs a model under.

Foundation layer. `model.train(flag)` sets every submodule, so restoring only the root's flag loses a
mixed state (a frozen BatchNorm in eval inside a model in training mode). This records each submodule's
own `.training` and restores it one by one. `tracks_running_stats` says whether eval mode reads stored
statistics (BatchNorm's running mean and variance), which belong to the weights they were collected with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def preserved_modes(model: nn.Module, train: bool | None = None) -> Iterator[nn.Module]:
    """Run the body with `model.train(train)` (unless None) and give every submodule its flag back after.

    Args:
        model: the module whose flags (its own and every submodule's) are put back.
        train: the mode for the body: True (train), False (eval) or None (leave the flags as they are).

    Returns:
        A context manager yielding `model`.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        if train is not None:
            model.train(train)
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def running_stats_modules(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm submodules of `model` that keep running statistics (`track_running_stats`).

    Args:
        model: any module.

    Returns:
        Those `nn.BatchNorm*` / `SyncBatchNorm` modules, in `modules()` order.
    """
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def tracks_running_stats(model: nn.Module) -> bool:
    """Whether any BatchNorm in `model` keeps running statistics (used in eval mode instead of batch statistics).

    Such statistics describe the activations of the weights they were collected with: at other weights
    (a point on a path between two checkpoints, say) they are another network's statistics.

    Args:
        model: any module.

    Returns:
        True when some `nn.BatchNorm*` / `SyncBatchNorm` submodule has `track_running_stats`.
    """
    return bool(running_stats_modules(model))
