"""Pre-LN ViT (docs/methods.md §B.2): structure, every connection mode, float64 gradcheck, and landscape's Hessian
products on it against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from landscape.errors import LandscapeError
from landscape.models import build
from landscape.models.vit import PRESETS

TINY = {"preset": "tiny", "dim": 4, "heads": 2, "depth": 1, "img_size": 4, "patch": 2, "n_classes": 3}


def _manual_forward(model, img):
    """The ViT written out from its parameters (identity connections)."""
    d = model.pos_embed.shape[-1]
    x = F.conv2d(img, model.patch_embed.weight, model.patch_embed.bias, stride=model.patch_embed.stride)
    x = x.flatten(2).transpose(1, 2) + model.pos_embed
    x = torch.cat([torch.zeros(img.shape[0], 1, d, dtype=img.dtype), x], 1)
    for blk in model.blocks:
        h = F.layer_norm(x, (d,), eps=1e-6)
        qkv = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias)
        heads = []
        for i in range(blk.attn.heads):
            q, k, v = (
                qkv[..., j * d : (j + 1) * d].reshape(*x.shape[:2], blk.attn.heads, -1)[:, :, i]
                for j in range(3)
            )
            heads.append(torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1) @ v)
        x = x + F.linear(torch.cat(heads, -1), blk.attn.proj.weight, blk.attn.proj.bias)
        h = F.layer_norm(x, (d,), eps=1e-6)
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h), approximate="tanh"))
    return model.head(model.head_norm(x[:, 0]))


def test_matches_the_written_out_vit():
    torch.manual_seed(0)
    model = build("vit", preset="tiny", img_size=8, patch=4, depth=2, dim=8, heads=2).double()
    img = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(img), _manual_forward(model, img))
    sdpa = build(
        "vit", preset="tiny", img_size=8, patch=4, depth=2, dim=8, heads=2, attn_impl="sdpa"
    ).double()
    torch.testing.assert_close(sdpa(img), model(img))


def test_structure_and_presets():
    model = build("vit", preset="s", img_size=32, patch=4)
    assert (len(model.blocks), model.pos_embed.shape, model.blocks[0].attn.heads) == (6, (1, 64, 384), 6)
    assert abs(model.pos_embed.std().item() - 0.02) < 0.002 and (model.cls_token == 0).all()
    blk = model.blocks[0]
    assert not blk.norm1.elementwise_affine and blk.norm1.eps == 1e-6 and model.head_norm.elementwise_affine
    assert blk.attn.qkv.bias is not None and blk.mlp.fc1.out_features == 4 * 384
    assert PRESETS["b"] == (768, 12, 12)
    assert (blk.connect_attn.kind, blk.connect_attn.reduce_dims) == ("tokens", (-1,))


MODES = [
    "identity",
    "ortho_feature",
    "ortho_global",
    "none",
    "scaled:0.5",
    "scaled_ln:2",
    "recursive_ln:2",
    "dense_orthogonal",
    [["ortho_feature", "identity"]],
]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode(mode, gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("vit", connect=mode, **TINY)
    img = torch.randn(2, 3, 4, 4)
    assert model(img).shape == (2, 3)
    every_param_gets_grad(model, img)
    gradcheck_model(model, img[:1])


def test_connect_per_block_and_sub_block():
    model = build("vit", **{**TINY, "depth": 2}, connect=["ortho_feature", ["identity", "scaled:2"]])
    modes = [(b.connect_attn.mode, b.connect_mlp.mode) for b in model.blocks]
    assert modes == [("ortho_feature", "ortho_feature"), ("identity", "scaled:2")]
    with pytest.raises(LandscapeError, match="attn, mlp"):
        build("vit", **TINY, connect=[["identity"]])


def test_landscape_hessian_products_match_finite_differences():
    """The docstring's promise: with the explicit attention, landscape's forward-over-reverse Hessian operator
    runs on the ViT and its products are right; with sdpa (no forward-mode AD and no double backward on
    CPU) the operator falls back to the math kernel and gives the same products. Reference: central
    differences of autograd gradients in float64, independent of both HVP code paths. The tiny net is
    sharply curved (|Hv| ~ 3e4), so h = 1e-7: truncation O(h^2) ~ 1e-3 absolute, 4e-8 relative, far
    below a wrong product."""
    from landscape.hessian import HessianOperator

    torch.manual_seed(0)
    # the first update is linear: at the zero CLS token an orthogonal projection has curvature ~1/eps = 1e6,
    # beyond what finite differences resolve
    connect = [["identity", "ortho_feature"], "ortho_feature"]
    model = build("vit", connect=connect, **{**TINY, "depth": 2}).double()
    img, y = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 2, 1])
    op = HessianOperator(model, F.cross_entropy, (img, y), backend="func")
    params = dict(model.named_parameters())
    assert op.layout.names == list(params)
    V = torch.randn(op.dim, 2, dtype=torch.float64)
    got = op.matmat(V)

    def flat_grad(theta):
        chunks = dict(zip(params, theta.split([p.numel() for p in params.values()])))
        view = {k: c.view(params[k].shape).requires_grad_() for k, c in chunks.items()}
        loss = F.cross_entropy(functional_call(model, view, (img,)), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(view.values()))])

    theta, h = torch.cat([p.detach().reshape(-1) for p in params.values()]), 1e-7
    ref = torch.stack([(flat_grad(theta + h * v) - flat_grad(theta - h * v)) / (2 * h) for v in V.T], 1)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
    assert (got - ref).abs().max() < 1e-3 * (got - op.matmat(V.flip(1))).abs().max()  # not a lucky tolerance
    if torch.device("cpu") == op.device:
        sdpa = build("vit", connect=connect, attn_impl="sdpa", **{**TINY, "depth": 2}).double()
        sdpa.load_state_dict(model.state_dict())
        torch.testing.assert_close(sdpa(img), model(img))
        op_sdpa = HessianOperator(sdpa, F.cross_entropy, (img, y))  # differentiated through the math kernel
        torch.testing.assert_close(op_sdpa.matmat(V), ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize(
    "bad", [{"preset": "xl"}, {"dim": 6, "heads": 4}, {"patch": 3}, {"attn_impl": "flash"}]
)
def test_bad_config(bad):
    with pytest.raises(LandscapeError):
        build("vit", **{**TINY, **bad})
