"""block_roles: transitions are exactly the blocks whose input and output shapes differ (found here by running
the model), the FC input layer is "input", skip-free blocks are "plain"."""

from __future__ import annotations

import pytest
import torch

from landscape.models import block_roles, build


def _shape_changes(model, x) -> set[str]:
    seen = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, i[0].shape != o.shape) and None)
             for k, b in enumerate(model.blocks)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return {f"blocks.{k}" for k, changed in seen.items() if changed}


@pytest.mark.parametrize("name,config,x", [
    ("resnet1d", {"n_blocks": 2, "width": 2}, torch.randn(2, 40)),
    ("procresnet1d", {"n_blocks": 2, "width": 2}, torch.randn(2, 40)),
    ("resnetv2", {"depth": 8, "width": 2}, torch.randn(2, 3, 8, 8)),
    ("resnet_zaeemzadeh", {"depth": 20, "width": 1}, torch.randn(2, 3, 8, 8)),
    ("procresnet", {"depth": 22, "width": 1, "img_size": 8}, torch.randn(2, 3, 8, 8)),
])
def test_transitions_are_the_shape_changing_blocks(name, config, x):
    model = build(name, **config)
    roles = block_roles(model)
    assert {k for k, r in roles.items() if r == "transition"} == _shape_changes(model, x) != set()
    assert set(roles.values()) == {"transition", "residual"}
    plain_model = build(name, **config, connect="none")
    plain = block_roles(plain_model)
    assert {k for k, r in plain.items() if r == "transition"} == _shape_changes(plain_model, x)
    assert set(plain.values()) == {"transition", "plain"}


def test_fc_and_transformer_roles():
    assert block_roles(build("fc", kind="residual", depth=4, width=3, in_dim=5)) == {
        "blocks.0": "input", "blocks.1": "residual", "blocks.2": "residual", "blocks.3": "residual"}
    assert set(block_roles(build("fc", kind="plain", depth=3, width=3, in_dim=5)).values()) == {"input", "plain"}
    assert set(block_roles(build("vit1d", dim=8, heads=2, depth=2)).values()) == {"residual"}
    assert block_roles(torch.nn.Linear(2, 2)) == {}
