"""BiasReg of docs/methods.md §A.2: L = λ_b Σ_l Σ_i (b_{l,i} − β)².

A reconstruction [TD]: Orhan & Pitkow name a bias regularizer, but its formula, the target
biases and the strength are unverified; add the penalty to the cross-entropy yourself.
Targets: `"branch"` (default) = the biases of every block's `branch_linear` (the FC nets'
unit pre-activations, the input layer included); `"linear"` = every nn.Linear bias inside
`model.blocks`; or an explicit list of parameter names (`model.named_parameters()`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError


def bias_parameters(model: nn.Module, targets: str | list[str] = "branch") -> list[Tensor]:
    """The bias tensors the penalty covers.

    Args:
        model: the model.
        targets: "branch" (the biases of the branches' linear layers), "linear" (every linear layer's), or a list
            of parameter names.

    Returns:
        The bias tensors.
    """
    if isinstance(targets, (list, tuple)):
        params = dict(model.named_parameters())
        missing = [n for n in targets if n not in params]
        if missing:
            raise LandscapeError(f"bias_penalty: model has no parameter(s) {missing}")
        return [params[n] for n in targets]
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise LandscapeError("bias_penalty: the model has no `blocks`; pass parameter names as targets")
    if targets == "branch":
        out = [b.branch_linear.bias for b in blocks if getattr(b, "branch_linear", None) is not None]
    elif targets == "linear":
        out = [m.bias for m in blocks.modules() if isinstance(m, nn.Linear)]
    else:
        raise LandscapeError(f"bias_penalty: unknown targets {targets!r}; use 'branch', 'linear' or names")
    out = [b for b in out if b is not None]
    if not out:
        raise LandscapeError(f"bias_penalty: the model has no {targets!r} biases")
    return out


def bias_penalty(
    model: nn.Module, strength: float, target: float = 0.0, targets: str | list[str] = "branch"
) -> Tensor:
    """λ_b Σ (b − β)² over the target biases (a scalar that carries gradients).

    Args:
        model: the model.
        strength: λ_b.
        target: β, the value the biases are pulled to.
        targets: which biases (`bias_parameters`).

    Returns:
        The penalty.
    """
    biases = bias_parameters(model, targets)
    return strength * torch.stack([((b - target) ** 2).sum() for b in biases]).sum()
