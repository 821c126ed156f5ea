"""Plumbing: which parameters an operator differentiates, and the flat-vector layout over them.

Flat order: the chosen parameters in `model.named_parameters()` order, each flattened row-major
(`p.reshape(-1)`), concatenated. `FlatLayout.split` / `join` convert between a batch of flat vectors
[k, dim] and per-parameter tensors [k, *shape] without copies where possible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError


def select_params(model: nn.Module, params: Iterable[str | Tensor] | None) -> list[str]:
    """Names of the differentiated parameters, in `named_parameters()` order.

    `params=None` → every parameter with `requires_grad`; otherwise names or the parameter tensors
    themselves (matched by identity), in any order.
    """
    named = list(model.named_parameters())
    if params is None:
        names = [n for n, p in named if p.requires_grad]
    else:
        wanted = list(params)
        by_id = {id(p): n for n, p in named}
        known = {n for n, _ in named}
        chosen = set()
        for w in wanted:
            if isinstance(w, str):
                if w not in known:
                    raise LandscapeError(f"params: {w!r} is not a parameter name of the model")
                chosen.add(w)
            elif isinstance(w, Tensor):
                if id(w) not in by_id:
                    raise LandscapeError("params: a tensor passed is not a parameter of the model")
                chosen.add(by_id[id(w)])
            else:
                raise LandscapeError(f"params: expected parameter names or tensors, got {type(w).__name__}")
        names = [n for n, _ in named if n in chosen]
    if not names:
        raise LandscapeError("no parameters to differentiate (none selected or none requires grad)")
    return names


class FlatLayout:
    """Shapes of the chosen parameters and the maps between flat [k, dim] and per-parameter [k, *shape]."""

    def __init__(self, names: Sequence[str], shapes: Sequence[torch.Size]):
        self.names = list(names)
        self.shapes = [torch.Size(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.sizes)

    def split(self, flat: Tensor) -> list[Tensor]:
        """[k, dim] → list of [k, *shape] views (one per parameter)."""
        k = flat.shape[0]
        return [t.view(k, *s) for t, s in zip(flat.split(self.sizes, dim=1), self.shapes)]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """list of [k, *shape] → [k, dim]."""
        k = parts[0].shape[0]
        return torch.cat([p.reshape(k, -1) for p in parts], dim=1)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """[dim] → {name: tensor of the parameter's shape}."""
        return dict(zip(self.names, (t[0] for t in self.split(vector.reshape(1, -1)))))


def snapshot(model: nn.Module, dtype: torch.dtype | None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Detached copies of all parameters and buffers (floating ones cast to `dtype`).

    The operator is the Hessian at these values: later changes to the model do not affect it, and the
    model is never written to.
    """

    def copy(t: Tensor) -> Tensor:
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            return t.to(dtype=dtype, copy=True)
        return t.clone()

    params = {n: copy(p) for n, p in model.named_parameters()}
    buffers = {n: copy(b) for n, b in model.named_buffers()}
    return params, buffers
