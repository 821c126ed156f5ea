"""`Objective(model, loss_fn, data)`: the data-set mean loss every engine measures, and its functional forward.

    L(θ) = Σ_b w_b ℓ_b(θ) / Σ_b w_b,     ℓ_b = the batch-mean loss,   w_b = what that mean runs over

w_b is the batch's sample count, or its token count where the loss is a mean over tokens (the model's own
loss of a token task, `landscape.objective.tasks`; or integer targets of two or more dimensions, counted
where ≠ −100, the mean `F.cross_entropy` takes), so a sum of w_b·ℓ_b over batches divided by Σ w_b is the
exact data-set mean whatever the batching. `weighting="samples"` or `"tokens"` overrides the rule.

The forward is `model(*batch.args, **batch.kwargs)`; with a parameter state it is
`torch.func.functional_call(model, state, ...)`, so no weight is ever written into the model.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.errors import LandscapeError, first_line
from landscape.modes import preserved_modes
from landscape.objective import tasks
from landscape.objective.batches import Batch, Batches

WEIGHTINGS = ("auto", "samples", "tokens")
_GLOB = set("*?[")


def select_params(model: nn.Module, params: Iterable[str | Tensor] | str | None) -> list[str]:
    """Names of the chosen parameters, in `model.named_parameters()` order (tied weights appear once).

    Args:
        model: the module whose parameters are chosen.
        params: None for every parameter with `requires_grad` (frozen ones are constants); else names,
            fnmatch patterns ("blocks.3.*") or the parameter tensors themselves, in any order.

    Returns:
        The parameter names. A name, pattern or tensor that matches nothing is a LandscapeError.
    """
    named = list(model.named_parameters())
    if params is None:
        names = [n for n, p in named if p.requires_grad]
    else:
        wanted = [params] if isinstance(params, (str, Tensor)) else list(params)
        by_id = {id(p): n for n, p in named}
        chosen: set[str] = set()
        for w in wanted:
            if isinstance(w, str):
                hits = [n for n, _ in named if fnmatch.fnmatchcase(n, w)] if _GLOB & set(w) else \
                    [n for n, _ in named if n == w]
                if not hits:
                    raise LandscapeError(f"params: {w!r} matches no parameter of the model")
                chosen.update(hits)
            elif isinstance(w, Tensor):
                if id(w) not in by_id:
                    raise LandscapeError("params: a tensor passed is not a parameter of the model")
                chosen.add(by_id[id(w)])
            else:
                raise LandscapeError(f"params: expected parameter names, patterns or tensors, got {type(w).__name__}")
        names = [n for n, _ in named if n in chosen]
    if not names:
        raise LandscapeError("no parameters to differentiate (none selected or none requires grad)")
    return names


def _check_loss_fn(loss_fn: Any) -> None:
    """Refuse a loss class (not an instance), a non-callable, and a loss module that does not average."""
    if loss_fn is None:
        return
    if isinstance(loss_fn, type):
        raise LandscapeError(f"loss_fn is the class {loss_fn.__name__}; pass an instance, e.g. {loss_fn.__name__}()")
    if not callable(loss_fn):
        raise LandscapeError(f"loss_fn must be callable (outputs, targets) -> batch-mean loss, got "
                             f"{type(loss_fn).__name__}")
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction in ("sum", "none"):
        raise LandscapeError(f"loss_fn has reduction={reduction!r}; every engine needs the batch mean: "
                             f"use {type(loss_fn).__name__}(reduction='mean')")


def _is_class_loss(loss_fn: Any) -> bool:
    """Is `loss_fn` cross-entropy or NLL (whose integer targets index the predictions' class dimension)?"""
    return loss_fn in (F.cross_entropy, F.nll_loss) or isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))


class Objective:
    """The data-set mean loss of `model` over `data`, evaluated functionally at any parameter state.

    Args:
        model: any nn.Module; HF transformers models are called with their keyword inputs.
        loss_fn: `loss_fn(predictions, targets)` → the batch mean; None: the model's own loss (its task's,
            see `landscape.objective.tasks`, or its output's `.loss`).
        data: any form `Batches` accepts.
        params: the differentiated parameters (see `select_params`).
        weighting: "auto", "samples" or "tokens" (see the module docstring).
        batch_size: cut in-memory data into batches of at most this many samples.
    """

    def __init__(self, model: nn.Module, loss_fn: Any = None, data: Any = None,
                 params: Iterable[str | Tensor] | str | None = None, *, weighting: str = "auto",
                 batch_size: int | None = None):
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"model must be an nn.Module, got {type(model).__name__}")
        _check_loss_fn(loss_fn)
        if weighting not in WEIGHTINGS:
            raise LandscapeError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.model, self.loss_fn, self.weighting = model, loss_fn, weighting
        self.task = tasks.model_task(model) if loss_fn is None else None
        self.data = Batches(data, batch_size)
        self.param_names = select_params(model, params)
        self._problem_type = getattr(getattr(model, "config", None), "problem_type", None)
        forward_params = inspect.signature(model.forward).parameters
        self._extra = {"use_cache": False} if "use_cache" in forward_params else {}
        self._takes_labels = "labels" in forward_params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in forward_params.values())
        self._checked = False

    @classmethod
    def of(cls, model: Any, loss_fn: Any = None, data: Any = None, params: Any = None, **kw: Any) -> Objective:
        """`model` itself when it is an Objective (the other arguments must then be left out), else a new one.

        Args:
            model: a model, or an Objective.
            loss_fn: the loss (None: the model's own).
            data: the data in any form `Batches` accepts.
            params: the differentiated parameters (`select_params`).
            **kw: further Objective options (weighting, batch_size).

        Returns:
            The Objective.
        """
        if isinstance(model, Objective):
            if loss_fn is not None or data is not None or params is not None or any(v is not None for v in kw.values()):
                raise LandscapeError("pass either an Objective or (model, loss_fn, data, params), not both")
            return model
        return cls(model, loss_fn, data, params, **kw)

    @property
    def own_loss(self) -> bool:
        """True when the loss is the model's own (loss_fn=None)."""
        return self.loss_fn is None

    def batches(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Iterator[Batch]:
        """The data's batches, prepared (see `prepare`).

        Args:
            device: where the batches go (None: where they are).
            dtype: the floating dtype (None: unchanged).

        Returns:
            An iterator of prepared batches.
        """
        for b in self.data:
            yield self.prepare(b, device, dtype)

    def prepare(self, batch: Batch, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Batch:
        """`batch` on `device` with floating tensors in `dtype`, and default labels for a causal LM without them.

        Args:
            batch: a batch of the data.
            device: where it goes (None: where it is).
            dtype: the floating dtype (None: unchanged).

        Returns:
            The prepared batch.
        """
        if device is not None:
            batch = batch.to(device, dtype)
        if batch.targets is None and self.task is not None:
            labels = tasks.default_labels(self.task, batch.kwargs)
            if labels is not None:
                batch = Batch(batch.args, batch.kwargs, labels)
        return batch

    def weight(self, batch: Batch) -> int:
        """w_b: the count the batch-mean loss runs over (samples or tokens, see the module docstring).

        Args:
            batch: a prepared batch.

        Returns:
            w_b, so that Σ_b w_b ℓ_b / Σ_b w_b is the data-set mean.
        """
        y = batch.targets
        if self.weighting == "samples" or not isinstance(y, Tensor):
            return batch.size
        if self.task is not None:
            return tasks.token_count(self.task, y)
        tokens = self.weighting == "tokens" or (not y.is_floating_point() and y.dim() >= 2)
        return int((y != tasks.IGNORE).sum()) if tokens else batch.size

    def call(self, batch: Batch, state: dict[str, Tensor] | tuple[dict, ...] | None = None,
             with_labels: bool = False) -> Any:
        """The model's raw output on `batch`; with `state` (a dict, or dicts to merge), through functional_call
        (tied weights stay tied).

        Args:
            batch: a prepared batch.
            state: parameters and buffers for `torch.func.functional_call` (None: the model's own).
            with_labels: pass the targets as `labels=` (HF models computing their own loss).

        Returns:
            The output as the model returns it.
        """
        kwargs = {**self._extra, **batch.kwargs}
        if with_labels:
            kwargs["labels"] = batch.targets
        if state is None:
            return self.model(*batch.args, **kwargs)
        return functional_call(self.model, state, batch.args, kwargs, tie_weights=True, strict=False)

    def output(self, batch: Batch, state: dict[str, Tensor] | None = None) -> Tensor:
        """The predictions (logits) on `batch`: the model's output tensor, or its `.logits`.

        Args:
            batch: a prepared batch.
            state: parameters and buffers (None: the model's own).

        Returns:
            The logits.
        """
        return tasks.logits_of(self.call(batch, state))

    def loss_of_output(self, predictions: Tensor, batch: Batch) -> Tensor:
        """ℓ_b as a function of the predictions (what the GGN's output-space Hessian differentiates).

        Args:
            predictions: the logits of `batch`.
            batch: the prepared batch (its targets).

        Returns:
            The scalar batch-mean loss.
        """
        if self.loss_fn is not None:
            if batch.targets is None:
                raise LandscapeError("the loss needs targets: pass (inputs, targets) batches or dicts with 'labels'")
            return self.loss_fn(predictions, batch.targets)
        if self.task is None:
            raise LandscapeError(f"{type(self.model).__name__} has no task whose loss is known from its outputs; "
                                 "pass loss_fn")
        if batch.targets is None:
            raise LandscapeError("the model's own loss needs labels: add 'labels' to the batches")
        return tasks.task_loss(self.task, predictions, batch.targets, self._problem_type)

    def correct(self, predictions: Tensor, batch: Batch) -> Tensor:
        """Correct argmax predictions among the units the mean runs over (`tasks.correct`).

        Args:
            predictions: the logits.
            batch: the prepared batch (its targets).

        Returns:
            The count, a 0-dim tensor.
        """
        return tasks.correct(self.task, predictions, batch.targets)

    def loss(self, batch: Batch, state: dict[str, Tensor] | None = None) -> Tensor:
        """ℓ_b, the batch-mean loss on `batch` (at `state`, or at the model's own parameters).

        Args:
            batch: a prepared batch.
            state: parameters and buffers (None: the model's own).

        Returns:
            The scalar loss.
        """
        if self.loss_fn is None and self.task is None:
            if not self._takes_labels:
                raise LandscapeError(f"loss_fn=None means the model's own loss, but {type(self.model).__name__} "
                                     "takes no labels: pass loss_fn (e.g. F.cross_entropy)")
            out = self.call(batch, state, with_labels=batch.targets is not None)
            loss = getattr(out, "loss", None) if not isinstance(out, dict) else out.get("loss")
            if not isinstance(loss, Tensor):
                raise LandscapeError(f"loss_fn=None needs a model that returns .loss; {type(self.model).__name__} "
                                     f"returns {type(out).__name__}: pass loss_fn")
            return loss
        return self.loss_of_output(self.output(batch, state), batch)

    def check(self, batch: Batch, state: dict[str, Tensor] | None = None) -> Tensor:
        """ℓ_b on a prepared first batch, with the checks that make it a data-set mean: a scalar, labels in range,
        and a mean, not a sum, over the batch. Runs in eval mode (no BatchNorm buffer moves); returns ℓ_b (no
        gradient).

        Args:
            batch: the prepared first batch.
            state: parameters and buffers (None: the model's own).

        Returns:
            ℓ_b.

        Raises:
            LandscapeError: a non-scalar loss, a label out of range, or a summed loss.
        """
        with torch.no_grad(), preserved_modes(self.model, train=False):
            loss = self._evaluate(batch, state)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                shape = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise LandscapeError(f"loss_fn must return a scalar (the batch-mean loss), got {shape}")
            if not self._checked and self.loss_fn is not None:
                self._check_mean(batch, state, loss)
        self._checked = True
        return loss

    def _evaluate(self, batch: Batch, state: dict[str, Tensor] | None) -> Tensor:
        """ℓ_b with a failure of the model or loss turned into one line naming the likely cause (class labels out
        of range are checked first for the cross-entropy family, whose CUDA kernels cannot report them)."""
        try:
            if _is_class_loss(self.loss_fn) and isinstance(batch.targets, Tensor):
                out = self.output(batch, state)
                self._check_labels(out, batch.targets)
                return self.loss_of_output(out, batch)
            return self.loss(batch, state)
        except LandscapeError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError) as e:
            raise LandscapeError(f"the loss failed on the first batch: {first_line(e)}") from e

    @staticmethod
    def _check_labels(out: Tensor, y: Tensor) -> None:
        """Integer class labels must index the predictions' class dimension (dim 1, or the last)."""
        if y.is_floating_point() or out.dim() < 2 or y.numel() == 0:
            return
        classes = out.shape[1] if y.dim() == out.dim() - 1 and y.shape[1:] == out.shape[2:] else out.shape[-1]
        valid = y[y != tasks.IGNORE]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
            raise LandscapeError(f"labels out of range: they span [{int(valid.min())}, {int(valid.max())}] but the "
                                 f"model predicts {classes} classes (labels must be in [0, {classes}))")

    def _check_mean(self, batch: Batch, state: dict[str, Tensor] | None, loss: Tensor) -> None:
        """Refuse a loss that sums over the batch: on two halves h1, h2 a mean gives ℓ = (w1 ℓ1 + w2 ℓ2)/(w1 + w2)
        and a sum gives ℓ = ℓ1 + ℓ2 (the λmax of a summed loss is N times too large)."""
        halves = batch.split(pieces=2)
        if len(halves) != 2:
            return
        try:
            parts = [self._evaluate(h, state) for h in halves]
        except LandscapeError:  # a loss of the whole batch only (not a mean over samples): nothing to compare
            return
        w = [self.weight(h) for h in halves]
        if not all(isinstance(p, Tensor) and p.dim() == 0 for p in parts) or min(w) == 0:
            return
        total = float(loss)
        mean = (w[0] * float(parts[0]) + w[1] * float(parts[1])) / (w[0] + w[1])
        summed = float(parts[0]) + float(parts[1])
        tol = 1e-3 * max(abs(total), 1e-30)
        if abs(total - summed) <= tol < abs(total - mean) and math.isfinite(total):
            raise LandscapeError("loss_fn sums over the batch (the loss of a batch equals the sum of its halves' "
                                 "losses); every engine needs the batch mean: use reduction='mean' or divide by "
                                 "the batch size")
