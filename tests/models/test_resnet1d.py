"""1-D ResNetV2 and ProcResNet-1D (Zaeemzadeh et al. stand-ins on MNIST-1D): layout, gradients, transitions,
and the Procrustes step on 1-D convs checked against the dense operator built column by column."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.models import build
from landscape.models.procrustes import ProcrustesRegularizer, conv_singular_values, procrustes_project
from landscape.models.resnet1d import Transition1d

MODES = ["identity", "none", "ortho_feature", "ortho_global", "scaled_ln:2", "recursive_bn:2", "dense_orthogonal"]


@pytest.mark.parametrize("name", ["resnet1d", "procresnet1d"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_shapes_and_gradients(name, mode, every_param_gets_grad):
    torch.manual_seed(0)
    model = build(name, n_blocks=1, width=2, connect=mode, signal_len=8, n_classes=3)
    x = torch.randn(3, 8)
    assert model(x).shape == (3, 3) and model(x.unsqueeze(1)).shape == (3, 3)
    # eval mode: a train-mode BN right after a block removes per-channel shifts exactly, so the norm
    # biases of a connection followed only by BN layers have a true zero gradient there
    every_param_gets_grad(model.eval(), x)


@pytest.mark.parametrize("name", ["resnet1d", "procresnet1d"])
def test_gradcheck(name, gradcheck_model):
    torch.manual_seed(1)
    gradcheck_model(build(name, n_blocks=1, width=1, signal_len=8, n_classes=2), torch.randn(2, 8))


def test_layout_and_transitions():
    res = build("resnet1d", n_blocks=2, width=4)
    x = torch.randn(5, 40)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append((tuple(i[0].shape), tuple(o.shape))) and None)
             for b in res.blocks]
    res(x)
    for h in hooks:
        h.remove()
    changes = [i for i, (a, b) in enumerate(shapes) if a != b]
    assert res.transitions == changes == [2, 4]
    assert shapes[2] == ((5, 4, 40), (5, 8, 20)) and shapes[-1][1] == (5, 16, 10)
    proc = build("procresnet1d", n_blocks=2, width=4, block="bottleneck")
    assert proc.transitions == [2, 5] and all(isinstance(proc.blocks[i], Transition1d) for i in proc.transitions)
    assert [c.weight.shape for c, _ in proc.procrustes_targets()] == [(16, 1, 3), (32, 16, 1), (64, 32, 1)]
    assert [g for _, g in proc.procrustes_targets()] == [40, 20, 10]
    assert proc(x).shape == (5, 10) and len(proc.blocks) == 8
    # residual blocks of ProcResNet keep their shape: identity shortcuts only
    assert all(proc.blocks[i].shortcut.__class__.__name__ == "Identity"
               for i in range(len(proc.blocks)) if i not in proc.transitions)


def _dense_strided(conv: torch.nn.Conv1d, length: int) -> torch.Tensor:
    """The transition as a dense matrix, one basis signal per column (independent of the FFT code)."""
    cin = conv.in_channels
    basis = torch.eye(cin * length, dtype=torch.float64).reshape(-1, cin, length)
    with torch.no_grad():
        out = F.conv1d(basis, conv.weight.double(), stride=conv.stride)
    return out.reshape(cin * length, -1).T


def test_procrustes_transitions_preserve_norm():
    """After one Procrustes step every nonzero singular value of the strided transition operator equals
    c = sqrt(out/in); the operator drops the odd positions, so E||T x||^2 / ||x||^2 = c^2 / 2 = 1 for
    isotropic x: norm-preserving on average, where the default init is not."""
    torch.manual_seed(2)
    model = build("procresnet1d", n_blocks=1, width=3, signal_len=8)
    before = [torch.linalg.svdvals(_dense_strided(c, g * 2)) for c, g in model.procrustes_targets()[1:]]
    assert all(s.max() / s[s > 1e-9].min() > 1.5 for s in before)
    ProcrustesRegularizer(model, p=1.0).project()
    for conv, grid in model.procrustes_targets()[1:]:
        length = 2 * grid
        s = torch.linalg.svdvals(_dense_strided(conv, length))
        nonzero = s[s > 1e-9]
        assert nonzero.numel() == conv.in_channels * length // 2  # rank min(out, in) per kept position
        torch.testing.assert_close(nonzero, torch.full_like(nonzero, 2**0.5), rtol=1e-6, atol=1e-6)
        x = torch.randn(4000, conv.in_channels, length, dtype=torch.float64)
        ratio = F.conv1d(x, conv.weight.double(), stride=2).square().sum() / x.square().sum()
        assert ratio.item() == pytest.approx(1.0, rel=0.03)


def test_1d_singular_values_match_the_dense_circular_operator_and_projection_converges():
    w = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    n = 6
    basis = torch.eye(2 * n, dtype=torch.float64).reshape(-1, 2, n)
    dense = F.conv1d(F.pad(basis, (1, 1), mode="circular"), w).reshape(2 * n, -1).T
    got = conv_singular_values(w, n)
    assert got.shape == (n, 2)
    torch.testing.assert_close(got.flatten().sort(descending=True).values, torch.linalg.svdvals(dense)[: 2 * n])
    c = 2**0.5
    for _ in range(40):
        w = procrustes_project(w, n)
    assert (conv_singular_values(w, n) - c).abs().max() < 1e-3


@pytest.mark.parametrize("bad", [{"n_blocks": 0}, {"width": 2.0}, {"block": "wide"}, {"signal_len": 42},
                                 {"connect": ["identity"]}])
@pytest.mark.parametrize("name", ["resnet1d", "procresnet1d"])
def test_bad_config(name, bad):
    with pytest.raises(LandscapeError):
        build(name, **bad)
