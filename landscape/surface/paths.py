"""Mode connectivity: the loss along the straight line and along a trained quadratic Bézier curve
between two sets of weights, and the barrier height along each.

Line: θ(t) = (1 − t)·θ_A + t·θ_B. Quadratic Bézier (Garipov et al. 2018, §3.2):
    θ(t) = (1 − t)²·θ_A + 2t(1 − t)·θ_C + t²·θ_B
         = θ_A + 2t(1 − t)·(θ_C − θ_A) + t²·(θ_B − θ_A),
so every curve point is a grid point with directions (θ_C − θ_A, θ_B − θ_A) and coordinates
(2t(1 − t), t²) and is evaluated by `evaluate_grid`. The control point θ_C starts at the midpoint and
is trained to minimize E_{t∼U(0,1)} L(θ(t)) (Garipov's objective with the uniform parametrization):
each step draws a minibatch and `t_per_step` values of t and follows the gradient of their mean loss,
the t values evaluated together through `vmap`.

Barrier (docs/methods.md §F.4): with L(t) on a grid of t including 0 and 1,
    barrier = max_t [L(t) − ((1 − t)·L(0) + t·L(1))]
(the rise over the straight interpolation of the endpoint losses; 0 for identical endpoints and for
any convex path), and barrier_max = max_t L(t) − max(L(0), L(1)) (the rise over the worse endpoint).

BatchNorm (docs/methods.md §F.4): a checkpoint's running statistics belong to its own weights, so every
point of a path gets its own, recomputed over the sample set (`bn="recompute"`, the default; Garipov et
al. 2018 recompute them at each point of their curves, and Jordan et al. 2023, REPAIR, show why stored or
interpolated statistics misstate the interpolated network). `bn="eval"` is refused for a model with
running statistics; for a model without them both modes are the same computation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from landscape.errors import LandscapeError
from landscape.modes import preserved_modes, tracks_running_stats
from landscape.objective import Batch, Objective, concat
from landscape.surface.directions import Direction, difference, parameters_of
from landscape.surface.grid import BN_MODES, evaluate_grid, pick_backend


@dataclass
class PathValues:
    """The loss along a path and its barrier heights.

    Args:
        t: [n] path parameters, increasing from 0 to 1.
        loss: [n] mean loss at each t.
        accuracy: [n] fraction correct at each t (NaN when not classification).
        kind: "linear" or "bezier".
        bn: how BatchNorm statistics were obtained ("recompute": each point's own; "eval": the model's
            buffers, only for models without running statistics).
    """

    t: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    kind: str
    bn: str = "recompute"

    @property
    def barrier(self) -> float:
        """max_t [L(t) − ((1 − t)L(0) + tL(1))] (`barrier_height`)."""
        return barrier_height(self.t, self.loss)

    @property
    def barrier_max(self) -> float:
        """max_t L(t) − max(L(0), L(1)): the rise over the worse endpoint."""
        return float(np.max(self.loss) - max(self.loss[0], self.loss[-1]))

    def to_dict(self) -> dict:
        """The path as plain data.

        Returns:
            JSON-able {kind, bn, t, loss, accuracy, barrier, barrier_max}.
        """
        return {"kind": self.kind, "bn": self.bn, "t": self.t.tolist(), "loss": self.loss.tolist(),
                "accuracy": self.accuracy.tolist(), "barrier": self.barrier, "barrier_max": self.barrier_max}


def barrier_height(t: Any, loss: Any) -> float:
    """The barrier of a path: the largest rise of the loss over the chord of its endpoint losses.

    Args:
        t: [n] increasing path parameters from t₀ = 0 to t₁ = 1 (n ≥ 2).
        loss: [n] losses L(t).

    Returns:
        max_t [L(t) − ((1 − t)L(0) + tL(1))] (0 for a linear or convex L).
    """
    t, loss = np.asarray(t, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or t.shape != loss.shape:
        raise LandscapeError("barrier: need matching 1-D t and loss with at least 2 points")
    if not (t[0] == 0 and t[-1] == 1 and np.all(np.diff(t) > 0)):
        raise LandscapeError("barrier: t must increase from 0 to 1")
    return float(np.max(loss - ((1 - t) * loss[0] + t * loss[-1])))


def _t_grid(n: int) -> np.ndarray:
    if n < 2:
        raise LandscapeError(f"a path needs at least 2 points, got {n}")
    return np.linspace(0.0, 1.0, n)


def path_bn(model: nn.Module, bn: str) -> str:
    """The BatchNorm mode of a path between two sets of weights, checked: never one endpoint's statistics.

    Args:
        model: the model the path is evaluated with.
        bn: "recompute" (each point's own statistics) or "eval" (the model's buffers at every point).

    Returns:
        `bn`, when it gives every point the statistics of its own weights.

    Raises:
        LandscapeError: "eval" for a model with BatchNorm running statistics (they belong to one endpoint).
    """
    if bn not in BN_MODES:
        raise LandscapeError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if bn == "eval" and tracks_running_stats(model):
        raise LandscapeError("bn='eval' would evaluate every point of the path with the model's BatchNorm running "
                             "statistics, which belong to one endpoint; use bn='recompute' (each point's own)")
    return bn


def linear_path(model: nn.Module, loss_fn: Callable, data: Any, a: Mapping[str, Tensor], b: Mapping[str, Tensor],
                n: int = 21, *, bn: str = "recompute", **grid_kw) -> PathValues:
    """Loss and accuracy at n evenly spaced points of the segment θ(t) = (1 − t)·a + t·b.

    Args:
        model: the model (its parameters are not modified; its buffers give non-BatchNorm state).
        loss_fn: batch-mean loss, loss_fn(output, y).
        data: the sample set, as `evaluate_grid` takes it.
        a: weights at t = 0 ({parameter name: tensor}).
        b: weights at t = 1 (same names and shapes).
        n: number of points, t = 0, 1/(n − 1), ..., 1.
        bn: BatchNorm statistics, see `path_bn` (default: recomputed at every point).
        **grid_kw: passed to `evaluate_grid` (batch_size, max_memory, backend, ...).

    Returns:
        `PathValues` with the barrier heights.
    """
    bn = path_bn(model, bn)
    a, b = parameters_of(a), parameters_of(b)
    t = _t_grid(n)
    vals = evaluate_grid(model, loss_fn, data, [difference(a, b)], t[:, None], origin=a, bn=bn, **grid_kw)
    return PathValues(t, vals.loss, vals.accuracy, "linear", bn)


def bezier_point(a: Mapping[str, Tensor], c: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float) -> Direction:
    """A point of the quadratic Bézier curve.

    Args:
        a: the endpoint at t = 0.
        c: the control point.
        b: the endpoint at t = 1.
        t: the curve parameter.

    Returns:
        θ(t) = (1 − t)²·a + 2t(1 − t)·c + t²·b, per parameter.
    """
    return {k: (1 - t) ** 2 * a[k] + 2 * t * (1 - t) * c[k] + t ** 2 * b[k] for k in a}


def bezier_path(model: nn.Module, loss_fn: Callable, data: Any, a: Mapping[str, Tensor], c: Mapping[str, Tensor],
                b: Mapping[str, Tensor], n: int = 21, *, bn: str = "recompute", **grid_kw) -> PathValues:
    """Loss and accuracy at n evenly spaced t along the quadratic Bézier curve a → (c) → b.

    Args:
        model: as in `linear_path`.
        loss_fn: as in `linear_path`.
        data: as in `linear_path`.
        a: the endpoint at t = 0.
        c: the control point (e.g. from `train_bezier`).
        b: the endpoint at t = 1.
        n: number of points, t = 0, 1/(n − 1), ..., 1.
        bn: BatchNorm statistics, see `path_bn` (default: recomputed at every point).
        **grid_kw: passed to `evaluate_grid`.

    Returns:
        `PathValues` of kind "bezier".
    """
    bn = path_bn(model, bn)
    a, b, c = parameters_of(a), parameters_of(b), parameters_of(c)
    t = _t_grid(n)
    coords = np.stack([2 * t * (1 - t), t ** 2], 1)
    vals = evaluate_grid(model, loss_fn, data, [difference(a, c), difference(a, b)], coords, origin=a, bn=bn,
                         **grid_kw)
    return PathValues(t, vals.loss, vals.accuracy, "bezier", bn)


def train_bezier(model: nn.Module, loss_fn: Callable, data: Any, a: Mapping[str, Tensor], b: Mapping[str, Tensor], *,
                 steps: int = 500, lr: float = 0.01, batch_size: int = 128, t_per_step: int = 4,
                 weight_decay: float = 0.0, seed: int = 0, train_mode: bool | None = None,
                 progress: Callable[[int, float], None] | None = None) -> Direction:
    """The control point θ_C of a quadratic Bézier curve from `a` to `b` trained to minimize the mean loss
    along the curve (Garipov et al. 2018): Adam on θ_C, initialized at (a + b)/2.

    Each step: a minibatch drawn with `seed`'s generator and `t_per_step` values of t ∼ U(0, 1)
    (vmapped). The model is not modified.

    Args:
        model: as in `linear_path`.
        loss_fn: as in `linear_path`.
        data: the sample set, in any form `evaluate_grid` takes.
        a: the endpoint at t = 0.
        b: the endpoint at t = 1.
        steps: Adam steps.
        lr: Adam's learning rate.
        batch_size: samples per step.
        t_per_step: values of t per step.
        weight_decay: Adam's weight decay.
        seed: seed of the minibatches and of t.
        train_mode: run the model in train mode (BatchNorm on batch statistics; the model's buffers are
            not updated) or eval mode. None: train mode when the model has BatchNorm running statistics
            (in eval mode every curve point would use one endpoint's), else eval mode.
        progress: called as progress(step, loss) after each step.

    Returns:
        θ_C as {parameter name: tensor}.
    """
    if train_mode is None:
        train_mode = tracks_running_stats(model)
    a, b = parameters_of(a), parameters_of(b)
    difference(a, b)
    if steps < 0 or t_per_step < 1 or batch_size < 1:
        raise LandscapeError("train_bezier: steps ≥ 0, t_per_step ≥ 1 and batch_size ≥ 1 are required")
    objective = Objective.of(model, loss_fn, data)
    model = objective.model
    first = a[next(iter(a))]
    whole = concat(list(objective.batches(first.device, first.dtype)))
    gen = torch.Generator().manual_seed(int(seed))
    c = {k: ((a[k] + b[k]) / 2).clone().requires_grad_(True) for k in a}
    opt = torch.optim.Adam(list(c.values()), lr=lr, weight_decay=weight_decay)
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def loss_at(t: Tensor, batch: Batch) -> Tensor:
        p = {k: (1 - t) ** 2 * a[k] + 2 * t * (1 - t) * c[k] + t ** 2 * b[k] for k in a}
        return objective.loss(batch, (p, buffers))

    use_vmap = not train_mode and pick_backend(model, first.device) == "vmap"
    with preserved_modes(model, train_mode):
        for step in range(steps):
            idx = torch.randint(0, whole.size, (min(batch_size, whole.size),), generator=gen).to(first.device)
            ts = torch.rand(t_per_step, generator=gen, dtype=torch.float64).to(first)
            batch = whole.select(idx)
            if use_vmap:
                loss = vmap(loss_at, in_dims=(0, None), randomness="different")(ts, batch).mean()
            else:  # BatchNorm's batch statistics update buffers in place; convolutions run faster unbatched
                loss = torch.stack([loss_at(t, batch) for t in ts]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss = loss.detach()
            opt.step()
            if progress is not None:
                progress(step, loss.item())
    return {k: v.detach() for k, v in c.items()}
