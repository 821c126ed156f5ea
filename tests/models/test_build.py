"""The registry: round trips through build_spec, seeding, one-line errors; and the BiasReg penalty."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.models import available, build
from landscape.models.biasreg import bias_parameters, bias_penalty

TINY = {
    "fc": {"kind": "hyper", "depth": 4, "width": 3, "in_dim": 5},
    "resnetv2": {"depth": 8, "width": 2, "connect": "dense_orthogonal"},
    "resnet_zaeemzadeh": {"depth": 11, "width": 1},
    "procresnet": {"depth": 13, "width": 1, "img_size": 8},
    "vit": {
        "preset": "tiny",
        "img_size": 8,
        "patch": 4,
        "connect": ["ortho_feature", ["identity", "scaled:2"]],
    },
    "resnet1d": {"n_blocks": 1, "width": 2, "connect": "ortho_global"},
    "procresnet1d": {"n_blocks": 1, "width": 2, "block": "bottleneck"},
    "vit1d": {"dim": 8, "depth": 2, "heads": 2, "signal_len": 10, "connect": ["ortho_global", "recursive_bn:2"]},
}


def test_available():
    assert available() == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_round_trip_and_seeding(name):
    rng = torch.get_rng_state()
    model = build(name, seed=7, **TINY[name])
    assert torch.equal(torch.get_rng_state(), rng)  # building leaves the global RNG alone
    spec = json.loads(json.dumps(model.build_spec))
    assert spec == model.build_spec and spec["name"] == name and spec["config"]["seed"] == 7
    again = build(**spec)
    assert again.build_spec == model.build_spec and repr(again) == repr(model)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = build(name, seed=8, **TINY[name]).state_dict()
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point())
    assert hasattr(model, "blocks") and isinstance(model.blocks, torch.nn.ModuleList)


def test_config_dict_and_keywords_merge():
    m = build("fc", config={"depth": 3, "width": 4}, width=5)
    assert m.build_spec["config"]["width"] == 5 and m.build_spec["config"]["depth"] == 3
    assert m.build_spec["config"]["kind"] == "plain"  # defaults are recorded


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build("mlp"), "unknown model 'mlp'"),
        (lambda: build("fc", widht=3), "widht"),
        (lambda: build("fc", width=torch.tensor(3)), "JSON"),
        (lambda: build("fc", seed="a"), "seed"),
        (lambda: build("resnetv2", depth=7), "depth 7"),
        (lambda: build("vit", preset="tiny", dim="x"), "vit"),
    ],
)
def test_errors_name_the_problem(call, match):
    with pytest.raises(LandscapeError, match=match):
        call()


def test_bias_penalty_matches_the_formula_and_its_gradient():
    model = build("fc", depth=3, width=4, in_dim=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    biases = [b.branch_linear.bias for b in model.blocks]
    ref = 0.3 * sum(((b - 0.5) ** 2).sum() for b in biases)
    pen = bias_penalty(model, 0.3, 0.5)
    torch.testing.assert_close(pen, ref)
    pen.backward()
    for b in biases:
        torch.testing.assert_close(b.grad, 0.6 * (b.detach() - 0.5))
    assert model.head.bias.grad is None
    names = ["head.bias"]
    torch.testing.assert_close(bias_penalty(model, 1.0, 0.0, names), (model.head.bias**2).sum())
    assert len(bias_parameters(build("vit", preset="tiny"), "linear")) == 2 * 4


def test_bias_penalty_errors():
    with pytest.raises(LandscapeError, match="branch"):
        bias_penalty(build("resnetv2", depth=8, width=2), 1.0)
    with pytest.raises(LandscapeError, match="no parameter"):
        bias_penalty(build("fc", depth=2, width=2), 1.0, targets=["nope.bias"])
    with pytest.raises(LandscapeError, match="unknown targets"):
        bias_penalty(build("fc", depth=2, width=2), 1.0, targets="all")
