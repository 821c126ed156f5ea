"""The skip-connection model zoo, built on `Connect`, and its registry.

    build("fc", kind="residual", depth=20, width=128)      # docs/methods.md §A.1
    build("resnetv2", depth=18, connect="ortho_feature")   # docs/methods.md §B.2
    build("vit", preset="s", connect="ortho_feature")      # docs/methods.md §B.2
    build("resnet_zaeemzadeh", depth=164); build("procresnet", depth=166)   # docs/methods.md §C.2
    build("fc", block="preact", init="he", branch_scale="inv_sqrt_depth")   # zero-mean branches
    build("resnet1d", n_blocks=2); build("procresnet1d", n_blocks=2)         # MNIST-1D stand-ins, C
    build("vit1d", patch=5, connect="ortho_feature")                        # MNIST-1D stand-in, B / D

`block_roles(model)` names each block "input", "transition", "plain" or "residual" (models/roles.py).

`build` records `model.build_spec = {"name": ..., "config": {...}}`: every constructor
keyword (defaults filled in) plus `seed`, plain JSON, so `build(**model.build_spec)` rebuilds
the same architecture and weights. Construction runs under `torch.random.fork_rng` seeded
with `seed` (default 0): the same seed gives identical weights and buffers, and the caller's
global RNG is left untouched. Constructing the classes directly uses the global RNG.
"""

from __future__ import annotations

import inspect
import json

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect
from landscape.models.fc import FCNet
from landscape.models.procresnet import ProcResNet, ZaeemzadehResNet
from landscape.models.resnet import ResNetV2
from landscape.models.resnet1d import ProcResNet1D, ResNet1D
from landscape.models.roles import block_roles
from landscape.models.vit import ViT
from landscape.models.vit1d import ViT1D

_REGISTRY: dict[str, type[nn.Module]] = {
    "fc": FCNet,
    "resnetv2": ResNetV2,
    "resnet_zaeemzadeh": ZaeemzadehResNet,
    "procresnet": ProcResNet,
    "vit": ViT,
    "resnet1d": ResNet1D,
    "procresnet1d": ProcResNet1D,
    "vit1d": ViT1D,
}

__all__ = ["Connect", "FCNet", "ProcResNet", "ProcResNet1D", "ResNet1D", "ResNetV2", "ViT", "ViT1D",
           "ZaeemzadehResNet", "available", "block_roles", "build"]


def available() -> list[str]:
    """Names `build` accepts."""
    return sorted(_REGISTRY)


def _options(cls: type[nn.Module]) -> dict[str, object]:
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(name: str, config: dict | None = None, **kwargs) -> nn.Module:
    """Build model `name` from a JSON-able config (a dict and/or keywords; keywords win).

    Args:
        name: a registered model (`available()`).
        config: its config dict.
        **kwargs: config entries that override `config`.

    Returns:
        The model, with `build_spec` = {"name", "config"} for checkpoints.
    """
    if name not in _REGISTRY:
        raise LandscapeError(f"unknown model {name!r}; available: {', '.join(available())}")
    cfg = {**(config or {}), **kwargs}
    try:
        cfg = json.loads(json.dumps(cfg))
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"{name}: config must be plain JSON data ({e})") from None
    seed = cfg.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LandscapeError(f"{name}: seed must be an integer, got {seed!r}")
    options = _options(_REGISTRY[name])
    unknown = sorted(set(cfg) - set(options))
    if unknown:
        known = ", ".join(sorted([*options, "seed"]))
        raise LandscapeError(f"{name}: unknown config key(s) {unknown}; known: {known}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = _REGISTRY[name](**cfg)
        except (TypeError, ValueError) as e:
            raise LandscapeError(f"{name}: bad config {cfg}: {e}") from None
    model.build_spec = {"name": name, "config": {**options, **cfg, "seed": seed}}
    return model
