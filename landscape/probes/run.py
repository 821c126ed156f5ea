"""`run_probes(model, loss_fn, data, metrics)`: probe a model over a whole data set (or one fixed batch).

Gradient norms are those of the objective's data-set mean loss L = Σ_b w_b ℓ_b / Σ_b w_b
(`landscape.objective`; w_b the samples, or the tokens of a per-token loss) with respect to the block streams
of all samples (the fixed minibatch of docs/methods.md §C.4 when the data is one batch): each batch's mean
loss is scaled by its size n_b, the backward runs as `torch.autograd.grad` with respect to the input (or, for
integer inputs, the parameters), so no `.grad` appears anywhere, and the summed squared norms are divided by
(Σ_b w_b)². The result does not depend on the batch size when `loss_fn` averages over its batch (the default,
cross-entropy, does) and the model treats samples independently (eval mode). Stream and singularity statistics
are means over every vector of the data set. The model runs in the mode it is in: call `model.eval()` first to
keep BatchNorm statistics and dropout out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.objective import Batch, Objective
from landscape.probes.hooks import probe


def run_probes(model: nn.Module | Objective, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
               data: Any = None, metrics: Sequence[str] = ("grad_norm", "stream"), *, blocks=None,
               batch_size: int | None = None, step: int | None = None, **options) -> list[dict]:
    """Run `metrics` over the data and return the records (see `probe` for the options).

    Args:
        model: an nn.Module, or an Objective (then leave loss_fn and data out).
        loss_fn: the batch-mean loss, needed only for "grad_norm" (None: the model's own loss, HF models).
        data: any form `landscape.objective.Batches` accepts; floating inputs are cast to the model's dtype.
        metrics: probe metric names ("grad_norm", "stream", "singularity", ...).
        blocks: the blocks to hook (default: discovered).
        batch_size: cut in-memory data into batches of this many samples.
        step: the training step recorded with every record.
        **options: passed to `probe`.

    Returns:
        The records. Without "grad_norm" the passes run under `torch.no_grad()`.
    """
    if loss_fn is not None and not callable(loss_fn) and not isinstance(loss_fn, type):
        raise LandscapeError(f"run_probes(model, loss_fn, data, ...): loss_fn must be callable or None, got "
                             f"{type(loss_fn).__name__} (the data comes third)")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    needs_grad = "grad_norm" in metrics
    objective = Objective.of(model, loss_fn, data, batch_size=batch_size)
    model = objective.model
    first = next((p for p in model.parameters()), None)
    device, dtype = (first.device, first.dtype) if first is not None else (None, None)
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0
    with probe(model, blocks, metrics, step=step, **options) as p:
        for batch in objective.batches(device, dtype):
            total += objective.weight(batch)
            if not needs_grad:
                with torch.no_grad():
                    objective.call(batch)
                continue
            if batch.targets is None:
                raise LandscapeError("grad_norm needs targets: pass (X, y), batches of (X, y) or dicts with 'labels'")
            batch = _inputs_require_grad(batch)
            inputs = [t for t in (*batch.args, *batch.kwargs.values()) if isinstance(t, Tensor) and t.requires_grad]
            loss = objective.loss(batch) * objective.weight(batch)
            if not loss.requires_grad:
                raise LandscapeError("the loss does not depend on anything that requires grad")
            torch.autograd.grad(loss, inputs or params, allow_unused=True)
        if total == 0:
            raise LandscapeError("run_probes got no data")
        p.grad_scale = 1.0 / total**2
    return p.records


def _inputs_require_grad(batch: Batch) -> Batch:
    """The batch with its floating inputs as fresh leaves that require grad (the backward then reaches every
    block's input without touching any parameter's `.grad`)."""

    def leaf(t: Any) -> Any:
        return t.detach().requires_grad_(True) if isinstance(t, Tensor) and t.is_floating_point() else t

    return Batch(tuple(leaf(a) for a in batch.args), {k: leaf(v) for k, v in batch.kwargs.items()}, batch.targets)
