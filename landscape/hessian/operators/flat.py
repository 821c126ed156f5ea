"""The objective frozen at θ (`Snapshot`) and the flat-vector layout over its differentiated parameters.

Flat order: the chosen parameters in `model.named_parameters()` order (`Objective.param_names`), each
flattened row-major (`p.reshape(-1)`), concatenated. `FlatLayout.split` / `join` convert between a batch of
flat vectors [k, dim] and per-parameter tensors [k, *shape] without copies where possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.objective import Batch, Objective


class FlatLayout:
    """Shapes of the chosen parameters and the maps between flat [k, dim] and per-parameter [k, *shape].

    Args:
        names: parameter names, in flat order.
        shapes: their shapes.
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[torch.Size]):
        self.names = list(names)
        self.shapes = [torch.Size(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.sizes)

    def split(self, flat: Tensor) -> list[Tensor]:
        """[k, dim] → list of [k, *shape] views (one per parameter).

        Args:
            flat: [k, dim] rows.

        Returns:
            The views.
        """
        k = flat.shape[0]
        return [t.view(k, *s) for t, s in zip(flat.split(self.sizes, dim=1), self.shapes)]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """list of [k, *shape] → [k, dim].

        Args:
            parts: one [k, *shape] tensor per parameter.

        Returns:
            The [k, dim] rows.
        """
        k = parts[0].shape[0]
        return torch.cat([p.reshape(k, -1) for p in parts], dim=1)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """[dim] → {name: tensor of the parameter's shape}.

        Args:
            vector: a flat [dim] vector.

        Returns:
            The per-parameter tensors.
        """
        return dict(zip(self.names, (t[0] for t in self.split(vector.reshape(1, -1)))))


class Snapshot:
    """The objective at fixed parameter values: detached copies of every parameter and buffer (floating ones
    in `dtype`), split into the differentiated `params` and the `constants`.

    The curvature is that of the loss at these values: later changes to the model do not affect it, and the
    model is never written to.

    Args:
        objective: what is measured (its `param_names` are differentiated).
        dtype: compute precision (None: the parameters' own).
    """

    def __init__(self, objective: Objective, dtype: torch.dtype | None = None):
        self.objective = objective
        model = objective.model

        def copy(t: Tensor) -> Tensor:
            t = t.detach()
            if dtype is not None and t.is_floating_point():
                return t.to(dtype=dtype, copy=True)
            return t.clone()

        everything = {n: copy(p) for n, p in model.named_parameters()}
        names = objective.param_names
        self.params = {n: everything[n] for n in names}
        self.constants = {**{n: p for n, p in everything.items() if n not in self.params},
                          **{n: copy(b) for n, b in model.named_buffers()}}
        first = self.params[names[0]]
        self.dtype: torch.dtype = first.dtype
        self.device: torch.device = first.device
        if not self.dtype.is_floating_point:
            raise LandscapeError(f"parameters must be floating point, got {self.dtype}")
        self.layout = FlatLayout(names, [p.shape for p in self.params.values()])

    def state(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """The full state for `functional_call`: `params` (the differentiated ones) over the constants.

        Args:
            params: {name: tensor} of the differentiated parameters.

        Returns:
            The state dict.
        """
        return {**self.constants, **params}

    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """ℓ_b at `params` (the batch mean).

        Args:
            params: {name: tensor} of the differentiated parameters.
            batch: the prepared batch.

        Returns:
            The scalar loss.
        """
        return self.objective.loss(batch, self.state(params))

    def gradient(self, params: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """∇ℓ_b at `params` per parameter, by one first-order backward pass into fresh leaves (zeros for a
        parameter the loss does not use); no graph is kept.

        Args:
            params: {name: tensor} of the differentiated parameters.
            batch: the prepared batch.

        Returns:
            The gradients, one per parameter.
        """
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        with torch.enable_grad():
            grads = torch.autograd.grad(self.loss(leaves, batch), list(leaves.values()), allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(leaves.values(), grads)]

    def output(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """The predictions on `batch` at `params`.

        Args:
            params: {name: tensor} of the differentiated parameters.
            batch: the prepared batch.

        Returns:
            The model's output (logits).
        """
        return self.objective.output(batch, self.state(params))

    def batches(self) -> Any:
        """The objective's batches on this snapshot's device, floating tensors in its dtype."""
        return self.objective.batches(self.device, self.dtype)
