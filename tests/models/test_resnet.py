"""ResNetV2 (docs/methods.md §B.2), the ResNet-164-style net and ProcResNet (§C.2): layout, connections,
gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.models import build
from landscape.models.procresnet import Transition
from landscape.models.resnet import resolve_layout

MODES = [
    "identity",
    "none",
    "ortho_feature",
    "ortho_global",
    "scaled:0.5",
    "scaled_ln:2",
    "recursive_ln:2",
    "dense_orthogonal",
]


@pytest.mark.parametrize("mode", MODES)
def test_resnetv2_every_mode(mode, gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("resnetv2", depth=8, width=2, connect=mode, n_classes=3)
    x = torch.randn(2, 3, 4, 4)
    assert model(x).shape == (2, 3)
    every_param_gets_grad(model, x)
    gradcheck_model(model, x)


def test_resnetv2_bottleneck_and_imagenet_layouts(every_param_gets_grad):
    torch.manual_seed(0)
    for cfg, n_blocks, out_ch in [({"depth": 11}, 3, 32), ({"depth": 18}, 8, 16), ({"depth": 50}, 16, 64)]:
        model = build("resnetv2", width=2, connect="ortho_feature", **cfg)
        x = torch.randn(2, 3, 8, 8)
        assert model(x).shape == (2, 10) and len(model.blocks) == n_blocks
        assert model.head.in_features == out_ch
    every_param_gets_grad(model, x)


def test_resolve_layout():
    assert resolve_layout(18, None, None) == ("imagenet", "basic", [2, 2, 2, 2])
    assert resolve_layout(34, None, None) == ("imagenet", "basic", [3, 4, 6, 3])
    assert resolve_layout(50, None, None) == ("imagenet", "bottleneck", [3, 4, 6, 3])
    assert resolve_layout(20, None, None) == ("cifar", "basic", [3, 3, 3])
    assert resolve_layout(56, None, None) == ("cifar", "basic", [9, 9, 9])
    assert resolve_layout(110, None, None) == ("cifar", "basic", [18, 18, 18])
    assert resolve_layout(164, None, None) == ("cifar", "bottleneck", [18, 18, 18])
    assert resolve_layout(11, None, None) == ("cifar", "bottleneck", [1, 1, 1])
    assert resolve_layout(164, "basic", None) == ("cifar", "basic", [27, 27, 27])
    assert resolve_layout(50, None, "cifar") == ("cifar", "basic", [8, 8, 8])
    for bad in [(7, None, None), (18, "bottleneck", None), (12, "bottleneck", None), (20, None, "mnist")]:
        with pytest.raises(LandscapeError):
            resolve_layout(*bad)


def test_resnetv2_structure_matches_spec():
    model = build("resnetv2", depth=18)
    assert isinstance(model.stem[0], nn.Conv2d) and model.stem[0].bias is not None
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    first, trans = model.blocks[0], model.blocks[2]
    assert isinstance(first.shortcut, nn.Identity)
    assert (
        isinstance(trans.shortcut, nn.Conv2d)
        and trans.shortcut.stride == (2, 2)
        and trans.shortcut.bias is not None
    )
    assert [type(m) for m in first.branch] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d] * 2
    assert trans.branch[2].stride == (2, 2) and trans.branch[5].stride == (1, 1)
    assert [b.branch[-1].out_channels for b in model.blocks][::2] == [64, 128, 256, 512]
    assert (
        sum(p.numel() for p in model.parameters()) == 11_176_074
    )  # preact ResNet-18 on CIFAR-10, no final BN
    bott = build("resnetv2", depth=50, width=2).blocks[0]
    assert bott.branch[2].kernel_size == (1, 1) and bott.branch[-1].out_channels == 8
    assert build("resnetv2", depth=8, width=2, connect="none").blocks[1].shortcut is None


def test_projection_is_against_the_shortcut_output():
    torch.manual_seed(0)
    model = build("resnetv2", depth=8, width=2, connect="ortho_feature").double()
    block = model.blocks[1]  # 2 → 4 channels, stride 2: a conv shortcut
    seen = {}
    block.connect.register_forward_hook(lambda m, i, o: seen.update(x=i[0], f=i[1], out=o))
    h = block.register_forward_pre_hook(lambda m, i: seen.update(inp=i[0]))
    model(torch.randn(2, 3, 4, 4, dtype=torch.float64))
    h.remove()
    torch.testing.assert_close(seen["x"], block.shortcut(seen["inp"]))
    torch.testing.assert_close(seen["f"], block.branch(seen["inp"]))
    upd = seen["out"] - seen["x"]
    assert ((upd * seen["x"]).sum(1) / (upd.norm(dim=1) * seen["x"].norm(dim=1))).abs().max() < 1e-5


def test_per_block_connect_list():
    model = build("resnetv2", depth=8, width=2, connect=["identity", "ortho_global", "none"])
    assert [b.connect.mode for b in model.blocks] == ["identity", "ortho_global", "none"]
    with pytest.raises(LandscapeError, match="3 modes"):
        build("resnetv2", depth=8, width=2, connect=["identity"])


def test_blocks_chain():
    """Every block's output is the next block's input (transitions included)."""
    for name, cfg in [
        ("resnetv2", {"depth": 8, "width": 2}),
        ("procresnet", {"depth": 13, "width": 1, "img_size": 8}),
        ("resnet_zaeemzadeh", {"depth": 11, "width": 1}),
    ]:
        model = build(name, **cfg)
        ins, outs = [], []

        def record(m, i, o, ins=ins, outs=outs):
            ins.append(i[0])
            outs.append(o)

        hooks = [b.register_forward_hook(record) for b in model.blocks]
        model(torch.randn(2, 3, 8, 8))
        for h in hooks:
            h.remove()
        assert all(outs[j] is ins[j + 1] for j in range(len(outs) - 1)), name


def test_zaeemzadeh_resnet(gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("resnet_zaeemzadeh", depth=11, width=1, n_classes=3)
    assert len(model.blocks) == 3
    first = model.blocks[0]  # 1 → 4 channels: BN-ReLU-conv1x1 shortcut
    assert [type(m) for m in first.shortcut] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert model.blocks[1].branch[5].stride == (2, 2) and model.blocks[1].branch[2].stride == (1, 1)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(2, 3, 4, 4)
    every_param_gets_grad(model, x)
    gradcheck_model(model, x)
    big = build("resnet_zaeemzadeh", depth=164)
    assert abs(sum(p.numel() for p in big.parameters()) / 1.71e6 - 1) < 0.01  # README: 1.71M


def test_procresnet(gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("procresnet", depth=13, width=1, img_size=4, n_classes=3, connect="ortho_feature")
    kinds = [type(b).__name__ for b in model.blocks]
    assert kinds == ["ResBlock", "Transition", "ResBlock", "Transition", "ResBlock"]
    assert all(isinstance(b.shortcut, nn.Identity) for b in model.blocks if not isinstance(b, Transition))
    convs = [
        (c.in_channels, c.out_channels, c.kernel_size, c.stride, g) for c, g in model.procrustes_targets()
    ]
    assert convs == [(3, 4, (3, 3), (1, 1), 4), (4, 8, (1, 1), (2, 2), 2), (8, 16, (1, 1), (2, 2), 1)]
    assert model.blocks[1].connect.mode == "none"
    x = torch.randn(2, 3, 4, 4)
    every_param_gets_grad(model, x)
    gradcheck_model(model, x)
    big = build("procresnet", depth=166)
    assert abs(sum(p.numel() for p in big.parameters()) / 1.72e6 - 1) < 0.01  # README: 1.72M
    with pytest.raises(LandscapeError, match="9n\\+4"):
        build("procresnet", depth=164)
