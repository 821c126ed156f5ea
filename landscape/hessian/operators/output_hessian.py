"""The output-space Hessian of a cross-entropy loss, applied analytically in chunks of tokens.

For the batch-mean cross-entropy over the N scored rows (tokens, or samples) of the logits f, p_t = softmax(f_t):

    ∇²_f ℓ · u = (1/N) Σ_t a_t (p_t ⊙ u_t − p_t (p_tᵀ u_t))          a_t = 1 where row t is scored, else 0

(the Hessian of −log softmax(f)_y in f is diag(p) − ppᵀ whatever the label y, so label smoothing, a mixture of
such terms with weights summing to one, has the same Hessian). It is applied to the k output tangents U [k, *f]
a chunk of rows at a time: p is recomputed from the logits per chunk (in float32 or wider), so beside U and
the result the peak memory is chunk · V · (k + 2) numbers, never B·T·V·V (the explicit Hessians) nor the
second-order graph of the loss over all B·T·V logits (the generic path: reverse-over-reverse through
`Objective.loss_of_output`). `chunk_rows` sizes the chunk from the budget (`landscape.memory.budget`).

Recognized losses (else `scored_rows` returns None and the GGN uses the generic path): the model's own loss of
an HF causal LM (row t scores label t+1: the last position and ignored labels are not scored), masked LM and
token classification (rows whose label ≠ −100); and a user loss `F.cross_entropy`, `nn.CrossEntropyLoss` or a
`functools.partial` of `F.cross_entropy` with mean reduction, no class weights, on [N, C] logits and [N]
integer targets.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.objective import IGNORE, Batch, Objective

_TOKEN_TASKS = ("causal_lm", "masked_lm", "token_classification")
_PARTIAL_KEYS = {"ignore_index", "label_smoothing", "reduction"}


def _user_ignore_index(loss_fn: object) -> int | None:
    """The ignore_index of a plain mean cross-entropy loss_fn, or None when it is anything else."""
    if loss_fn is F.cross_entropy:
        return IGNORE
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return loss_fn.ignore_index if loss_fn.weight is None and loss_fn.reduction == "mean" else None
    if isinstance(loss_fn, functools.partial) and loss_fn.func is F.cross_entropy and not loss_fn.args:
        kw = loss_fn.keywords
        if set(kw) <= _PARTIAL_KEYS and kw.get("reduction", "mean") == "mean":
            return int(kw.get("ignore_index", IGNORE))
    return None


def scored_rows(objective: Objective, logits: Tensor, batch: Batch) -> Tensor | None:
    """a_t: which rows of the logits [..., V] the batch-mean cross-entropy scores (bool, shape logits.shape[:-1]),
    or None when the loss is not a recognized cross-entropy (see the module docstring).

    Args:
        objective: the loss's owner (its task or loss_fn decides).
        logits: the model's predictions on `batch`.
        batch: the prepared batch (its targets are the labels).

    Returns:
        The boolean mask, or None.
    """
    y = batch.targets
    if not isinstance(y, Tensor) or y.is_floating_point():
        return None
    if objective.own_loss:
        task = objective.task
        if task not in _TOKEN_TASKS or y.shape != logits.shape[:-1]:
            return None
        if task == "causal_lm":
            active = torch.zeros_like(y, dtype=torch.bool)
            active[..., :-1] = y[..., 1:] != IGNORE
            return active
        return y != IGNORE
    ignore = _user_ignore_index(objective.loss_fn)
    if ignore is None or logits.dim() != 2 or y.shape != logits.shape[:1]:
        return None
    return y != ignore


def chunk_rows(budget: int, vocab: int, k: int, element_bytes: int = 4) -> int:
    """Rows per chunk so that the chunk's p, its products and their sums (chunk · V · (k + 2) numbers) take at
    most a sixteenth of `budget` (the operator's budget also holds the model's graphs and the tangents).

    Args:
        budget: the operator's bytes (`landscape.memory.budget`).
        vocab: V, the logits' last dimension.
        k: vectors applied at once.
        element_bytes: bytes per number of the computation (4 for float32).

    Returns:
        At least 1.
    """
    return max(1, budget // 16 // max(1, vocab * (k + 2) * element_bytes))


class CrossEntropyHessian:
    """u ↦ ∇²_f ℓ u for the batch-mean cross-entropy, chunked over rows (see the module docstring).

    Args:
        logits: the predictions f [..., V] at θ (detached).
        active: a_t, the scored rows (bool, shape logits.shape[:-1]).
        budget: bytes that size the chunk (`chunk_rows`).
    """

    def __init__(self, logits: Tensor, active: Tensor, budget: int):
        self.logits = logits.detach().reshape(-1, logits.shape[-1])
        self.rows = active.reshape(-1).nonzero().squeeze(1)
        self.count = int(self.rows.numel())
        self.shape = logits.shape
        self.budget = budget

    def apply(self, U: Tensor) -> Tensor:
        """∇²_f ℓ applied to each of the k tangents U [k, *logits.shape]; unscored rows give zero.

        Args:
            U: [k, *logits.shape] tangents of the logits.

        Returns:
            (diag(p) − p pᵀ) U per scored row, divided by the scored count; [k, *logits.shape].
        """
        k, vocab = U.shape[0], self.shape[-1]
        flat = U.reshape(k, -1, vocab)
        out = torch.zeros_like(flat)
        if self.count == 0:
            return out.reshape(U.shape)
        wide = torch.promote_types(self.logits.dtype, torch.float32)
        step = chunk_rows(self.budget, vocab, k, torch.finfo(wide).bits // 8)
        for lo in range(0, self.count, step):
            rows = self.rows[lo:lo + step]
            p = torch.softmax(self.logits[rows].to(wide), dim=-1)            # [c, V]
            u = flat[:, rows].to(wide)                                         # [k, c, V]
            hu = p * (u - (u * p).sum(-1, keepdim=True))
            out[:, rows] = hu.div_(self.count).to(out.dtype)
        return out.reshape(U.shape)


def cross_entropy_hessian(objective: Objective, logits: Tensor, batch: Batch,
                          budget: int) -> CrossEntropyHessian | None:
    """The analytic output-space Hessian of `objective`'s loss on `batch`, or None when it is not a recognized
    cross-entropy (the caller then differentiates `Objective.loss_of_output` twice).

    Args:
        objective: the measured objective.
        logits: its predictions on `batch` at θ.
        batch: the prepared batch.
        budget: bytes that size the row chunk.

    Returns:
        A `CrossEntropyHessian`, or None.
    """
    active = scored_rows(objective, logits, batch)
    if active is None or not math.prod(logits.shape):
        return None
    return CrossEntropyHessian(logits, active, budget)
