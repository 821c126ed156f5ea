"""The model's own loss, for models that define one (HF transformers): which task, its loss from the
logits, and the count its mean runs over.

With `loss_fn=None` the objective is the loss the model's task defines (HF's `...For<Task>` heads), computed
here from the logits so that the Hessian, the GGN (which needs the loss as a function of the outputs) and
the weights agree exactly:

- causal LM: ℓ = mean over positions t < T−1 with labels[t+1] ≠ −100 of CE(logits[t], labels[t+1])
  (HF shifts the labels by one inside the model); weight = that count of tokens;
- masked LM and token classification: mean over positions with labels ≠ −100 of CE(logits[t], labels[t]);
  weight = that count of tokens;
- sequence classification: CE (single-label), MSE (one label: regression) or BCE-with-logits (multi-label,
  float targets), as HF's `problem_type` rule picks it; weight = samples.
A causal-LM batch without labels is scored on its own tokens (labels = input_ids, padding positions −100),
as HF's DataCollatorForLanguageModeling(mlm=False) makes them. A model whose task is not recognized but
whose output has `.loss` is called with the labels and its `.loss` is used (weight: samples).
`tests/test_objective.py` checks each rule against the model's own `.loss`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100
"""The label HF losses ignore (padding, unmasked positions)."""

TASKS = ("causal_lm", "masked_lm", "token_classification", "sequence_classification")
_MAPPINGS = {
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "token_classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "sequence_classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
}


def model_task(model: nn.Module) -> str | None:
    """The HF task of `model` (one of TASKS) from its class name, or None for any other model.

    Args:
        model: any module; only classes defined in the `transformers` package are recognized.

    Returns:
        The task name, or None.
    """
    cls = _own_class(model)
    if not cls.__module__.startswith("transformers."):
        return None
    from transformers.models.auto import modeling_auto

    name = cls.__name__
    for task, mapping in _MAPPINGS.items():
        if name in set(_flatten(getattr(modeling_auto, mapping, {}).values())):
            return task
    return None


def _own_class(model: nn.Module) -> type:
    """The model's class; for a module FSDP2's `fully_shard` wrapped (its class swapped for a subclass of
    FSDPModule and the original), the original."""
    cls = type(model)
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return cls
    if issubclass(cls, FSDPModule):
        return next(c for c in cls.__mro__ if not issubclass(c, FSDPModule))
    return cls


def _flatten(values: Any) -> list[str]:
    out = []
    for v in values:
        out += list(v) if isinstance(v, (tuple, list)) else [v]
    return out


def logits_of(output: Any) -> Tensor:
    """The prediction tensor of a model's output: itself, `.logits`, `["logits"]`, or the first element.

    Args:
        output: what the model returned.

    Returns:
        The logits.
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, Tensor):
        raise TypeError(f"cannot find the predictions in a {type(output).__name__} (no tensor, .logits or [0])")
    return logits


def default_labels(task: str | None, kwargs: dict) -> Tensor | None:
    """Labels of a causal-LM batch given without them: the input ids, padding positions set to IGNORE.

    Args:
        task: the HF task ("causal_lm", ...) or None.
        kwargs: the batch's keyword inputs (input_ids, attention_mask).

    Returns:
        The labels, or None for another task or without input_ids.
    """
    if task != "causal_lm" or "input_ids" not in kwargs:
        return None
    labels = kwargs["input_ids"].clone()
    mask = kwargs.get("attention_mask")
    if mask is not None:
        labels[mask == 0] = IGNORE
    return labels


def token_count(task: str | None, labels: Tensor) -> int:
    """What the task's mean runs over: non-ignored (shifted, for causal LM) tokens, or samples.

    Args:
        task: the HF task or None.
        labels: the batch's labels.

    Returns:
        The count.
    """
    if task == "causal_lm":
        return int((labels[..., 1:] != IGNORE).sum())
    if task in ("masked_lm", "token_classification"):
        return int((labels != IGNORE).sum())
    return int(labels.shape[0])


def task_loss(task: str, logits: Tensor, labels: Tensor, problem_type: str | None = None) -> Tensor:
    """The batch-mean loss of `task` from the logits (see the module docstring).

    Args:
        task: one of TASKS.
        logits: [B, T, V] for token tasks, [B, C] for sequence classification.
        labels: [B, T] token labels (IGNORE where not scored) or [B] / [B, C] sequence labels.
        problem_type: HF's config.problem_type for sequence classification (None: inferred as HF does).

    Returns:
        A scalar tensor, in float32 or wider (bf16 logits are upcast, as HF's loss does).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if task == "causal_lm":
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    if task in ("causal_lm", "masked_lm", "token_classification"):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    kind = problem_type or _problem_type(logits, labels)
    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).reshape(logits.squeeze(-1).shape))
    if kind == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _problem_type(logits: Tensor, labels: Tensor) -> str:
    """HF's rule: one output → regression; integer labels → single-label; else multi-label."""
    if logits.shape[-1] == 1:
        return "regression"
    if not labels.is_floating_point():
        return "single_label_classification"
    return "multi_label_classification"


def correct(task: str | None, logits: Tensor, labels: Tensor) -> Tensor:
    """How many argmax predictions equal their labels, over what the task's mean runs over (shifted,
    non-ignored tokens; or samples). For a user loss (task None): class dimension 1 of [B, C, ...] logits
    against [B, ...] labels, or the last dimension of [..., C] logits against [...] labels.

    Args:
        task: the HF task or None.
        logits: the predictions.
        labels: the labels.

    Returns:
        The count, a 0-dim tensor.
    """
    if task == "causal_lm":
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    if task in ("causal_lm", "masked_lm", "token_classification"):
        return ((logits.argmax(-1) == labels) & (labels != IGNORE)).sum()
    if task is None and labels.dim() == logits.dim() - 1 and labels.shape[1:] == logits.shape[2:] \
            and labels.shape[1:] != logits.shape[1:-1]:
        return ((logits.argmax(1) == labels) & (labels != IGNORE)).sum()
    return ((logits.argmax(-1) == labels) & (labels != IGNORE)).sum()
