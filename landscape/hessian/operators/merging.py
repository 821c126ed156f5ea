"""A plan's batch merging: how many samples one merged batch may hold, and whether merging changes nothing.

Batches are concatenated up to `budget/2 / (per-sample state · lanes)` samples when the first two batches give
the same outputs and weighted mean loss concatenated as separately (samples are independent and the loss is a
batch mean), so the merged operator is the same matrix; unless merging was asked for, a merged batch holds at
most `MERGE_STATE_BYTES` of kept state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from landscape.hessian.operators.backends import Sizing
from landscape.hessian.operators.flat import Snapshot
from landscape.objective import Batch, concat, concatenable

MERGE_STATE_BYTES = 64 << 20
"""By default batches are merged only up to this much kept state per merged batch: merging cuts the per-batch
overhead (Python, dispatch) of small products, while bigger ones are compute-bound (ResNet-18's 16-sample
batches, ~300 MiB each: the same seconds per vector merged into 32 or not) and a merged batch's product holds
transient memory in proportion to its samples."""


def merge_target(snap: Snapshot, merge: bool | None, budget: int, sizing: Sizing, first: list[Batch], backend: str,
                 precision: torch.dtype, kernel: Callable[[], AbstractContextManager]) -> int | None:
    """Samples per merged batch, or None to keep the batches as given.

    One batch's products may use half the budget: the kept state plus about one state of tangents per vector
    processed at a time (sequential vectors: 1; vmapped: assume 4), so target = budget/2 / (state per sample ·
    (1 + lanes)), capped at `MERGE_STATE_BYTES` of state unless merging was asked for.

    Args:
        snap: the objective at θ.
        merge: the request's merging: None (when it fits and samples are independent), True or False.
        budget: bytes the operator may use.
        sizing: the measured per-sample state.
        first: the first two prepared batches.
        backend: the chosen backend.
        precision: the dtype the products compute in (the tolerance of `independent` follows it).
        kernel: the products' compute context (attention kernel, autocast).

    Returns:
        The target sample count, or None (merging off, one batch, batches that cannot be concatenated, the
        first two batches already larger, or samples that are not independent).
    """
    if merge is False or len(first) < 2 or not concatenable(first):
        return None
    per_sample = sizing.state_bytes_per_sample * (2 if backend == "double_backward" else 5)
    target = int(budget // 2 // per_sample)
    if merge is None:
        target = min(target, MERGE_STATE_BYTES // max(1, sizing.state_bytes_per_sample))
    if target < sum(b.size for b in first) or not independent(snap, first, precision, kernel):
        return None
    return target


def independent(snap: Snapshot, first: list[Batch], precision: torch.dtype,
                kernel: Callable[[], AbstractContextManager]) -> bool:
    """Do the first two batches give the same outputs and weighted mean loss when concatenated?

    Args:
        snap: the objective at θ.
        first: the batches.
        precision: the compute dtype; the tolerance is 10·√eps of it, relative.
        kernel: the products' compute context.

    Returns:
        True when outputs agree row by row and L(concat) = Σ w_b L_b / Σ w_b within the tolerance.
    """
    objective = snap.objective
    tol = 10 * math.sqrt(torch.finfo(precision).eps)
    with torch.no_grad(), kernel():
        outs = [snap.output(snap.params, b) for b in first]
        joined = concat(first)
        out = snap.output(snap.params, joined)
        if out.shape[0] != sum(o.shape[0] for o in outs) or out.shape[1:] != outs[0].shape[1:]:
            return False
        sep = torch.cat(outs)
        if (out - sep).abs().max() > tol * max(float(sep.abs().max()), 1e-30):
            return False
        w = [objective.weight(b) for b in first]
        if sum(w) == 0:
            return False
        mean = sum(wi * snap.loss(snap.params, b) for wi, b in zip(w, first)) / sum(w)
        return bool(abs(snap.loss(snap.params, joined) - mean) <= tol * max(float(abs(mean)), 1e-30))
