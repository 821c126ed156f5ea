"""The optimizer and the learning-rate schedule of a training run.

Learning rate at optimizer step s (0-based), T steps in all, W = warmup_epochs × steps per epoch:
    warmup  s < W:  lr · (s+1)/W
    constant:       lr
    step:           lr · γ^(number of milestones ≤ current epoch index)
    cosine:         lr · ½(1 + cos(π (s−W)/(T−W)))
It is a pure function of s, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape.train.config import TrainConfig


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step` (0-based); see the module docstring.

    Args:
        step: the optimizer step.
        steps_per_epoch: steps per epoch.
        cfg: the run's config (schedule, warmup, milestones, gamma).

    Returns:
        The factor.
    """
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "step":
        return cfg.gamma ** sum(m <= step // steps_per_epoch for m in cfg.milestones)
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Set every parameter group's learning rate for optimizer step `step` (0-based); returns it.

    Args:
        optimizer: the optimizer.
        step: the optimizer step.
        steps_per_epoch: steps per epoch.
        cfg: the run's config.

    Returns:
        The learning rate.
    """
    lr = cfg.lr * lr_factor(step, steps_per_epoch, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """sgd (momentum, coupled L2), adam (coupled L2, as the ViT recipe of docs/methods.md §B.4) or adamw
    (decoupled).

    Args:
        model: the model.
        cfg: the run's config (optimizer, lr, momentum, weight_decay).

    Returns:
        The optimizer.
    """
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
