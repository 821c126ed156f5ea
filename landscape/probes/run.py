"""`run_probes(model, loss_fn, data, metrics)`: probe a model over a whole data set (or one fixed batch).

Gradient norms are those of the data-set mean loss L = (1/N) Σ_i ℓ_i with respect to the block
streams of all N samples (the fixed minibatch of docs/methods.md §C.4 when the data is one batch): each
batch's mean loss is scaled by its size n_b, the backward runs as `torch.autograd.grad` with respect to the
input (or, for integer inputs, the parameters), so no `.grad` appears anywhere, and the summed
squared norms are divided by N². The result does not depend on the batch size when `loss_fn` averages over its
batch (the default, cross-entropy, does) and the model treats samples independently (eval mode).
Stream and singularity statistics are means over every vector of the data set. The model runs in
the mode it is in: call `model.eval()` first to keep BatchNorm statistics and dropout out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.probes.hooks import probe


def iter_batches(data, batch_size: int | None = None) -> Iterable[tuple[Tensor, Tensor | None]]:
    """(X, y) batches from a tensor X, an (X, y) pair, an object with `.X` / `.y`, or an iterable of pairs."""
    if isinstance(data, Tensor):
        data = (data, None)
    elif hasattr(data, "X") and hasattr(data, "y"):
        data = (data.X, data.y)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        X, y = data
        step = batch_size or len(X)
        if step < 1:
            raise LandscapeError(f"batch size must be positive, got {batch_size}")
        return ((X[s:s + step], None if y is None else y[s:s + step]) for s in range(0, len(X), step))
    if batch_size is not None:
        raise LandscapeError("batch_size applies to tensors / (X, y) pairs, not to an iterable of batches")
    try:
        it = iter(data)
    except TypeError:
        raise LandscapeError(f"cannot read batches from {type(data).__name__}; pass (X, y)") from None
    return (tuple(b) if isinstance(b, (tuple, list)) else (b, None) for b in it)


def run_probes(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None, data,
               metrics: Sequence[str] = ("grad_norm", "stream"), *, blocks=None,
               batch_size: int | None = None, step: int | None = None, **options) -> list[dict]:
    """Run `metrics` over `data` (see `iter_batches`) and return the records (see `probe` for options).

    `loss_fn(output, y)` must return the batch-mean loss; it is needed only for "grad_norm"
    (None: cross-entropy). Without "grad_norm" the passes run under `torch.no_grad()`.
    """
    if loss_fn is not None and not callable(loss_fn):
        raise LandscapeError(f"run_probes(model, loss_fn, data, ...): loss_fn must be callable or None, got "
                             f"{type(loss_fn).__name__} (the data comes third)")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    needs_grad = "grad_norm" in metrics
    loss_fn = loss_fn or F.cross_entropy
    device = next((p.device for p in model.parameters()), None)
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0
    with probe(model, blocks, metrics, step=step, **options) as p:
        for X, y in iter_batches(data, batch_size):
            if device is not None:
                X, y = X.to(device), (None if y is None else y.to(device))
            total += len(X)
            if not needs_grad:
                with torch.no_grad():
                    model(X)
                continue
            if y is None:
                raise LandscapeError("grad_norm needs targets: pass (X, y) or batches of (X, y)")
            if X.is_floating_point():
                X = X.detach().requires_grad_(True)
            loss = loss_fn(model(X), y) * len(X)
            if not loss.requires_grad:
                raise LandscapeError("the loss does not depend on anything that requires grad")
            torch.autograd.grad(loss, [X] if X.requires_grad else params, allow_unused=True)
        if total == 0:
            raise LandscapeError("run_probes got no data")
        p.grad_scale = 1.0 / total**2
    return p.records
