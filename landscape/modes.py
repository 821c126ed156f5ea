"""Train/eval flags put back exactly: the one context manager every measurement runs a model under.

Foundation layer. `model.train(flag)` sets every submodule, so restoring only the root's flag loses a
mixed state (a frozen BatchNorm in eval inside a model in training mode). This records each submodule's
own `.training` and restores it one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def preserved_modes(model: nn.Module, train: bool | None = None) -> Iterator[nn.Module]:
    """Run the body with `model.train(train)` (unless None) and give every submodule its flag back after."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        if train is not None:
            model.train(train)
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
