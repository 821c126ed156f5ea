"""The 1-D patch transformer (Oh et al. / Liu et al. stand-in on MNIST-1D): a written-out forward pass,
gradients for every connection, the orthogonal update's geometry, and the xSkip lambda^L skip path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.models import build

TINY = {"dim": 8, "depth": 2, "heads": 2, "signal_len": 12, "patch": 3, "n_classes": 3}
MODES = ["identity", "ortho_feature", "ortho_global", "scaled:0.5", "scaled_ln:2", "recursive_ln:2",
         "scaled_bn:1", "recursive_bn:2"]


def _manual(model, x, heads):
    """Embedding, attention (softmax(q k^T / sqrt d_h) v, written with einsum), MLP and head from the weights."""
    d = model.head.in_features
    t = F.conv1d(x.unsqueeze(1), model.patch_embed.weight, model.patch_embed.bias, stride=model.patch_embed.stride)
    t = t.transpose(1, 2) + model.pos_embed
    h = torch.cat([model.cls_token.expand(len(x), -1, -1), t], 1)
    for blk in model.blocks:
        a_in = F.layer_norm(h, (d,), eps=1e-6)
        q, k, v = F.linear(a_in, blk.attn.qkv.weight, blk.attn.qkv.bias).chunk(3, -1)
        split = lambda z: z.reshape(*z.shape[:2], heads, d // heads)  # noqa: E731
        w = torch.einsum("bqhc,bkhc->bhqk", split(q), split(k)) / (d // heads) ** 0.5
        o = torch.einsum("bhqk,bkhc->bqhc", w.softmax(-1), split(v)).reshape(h.shape)
        h = h + F.linear(o, blk.attn.proj.weight, blk.attn.proj.bias)
        m_in = F.layer_norm(h, (d,), eps=1e-6)
        m = F.linear(F.gelu(F.linear(m_in, blk.mlp.fc1.weight, blk.mlp.fc1.bias), approximate="tanh"),
                     blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        h = h + m
    return model.head(F.layer_norm(h[:, 0], (d,), model.head_norm.weight, model.head_norm.bias))


def test_forward_matches_written_out_pre_ln_transformer():
    model = build("vit1d", **TINY).double()
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(model(x), _manual(model, x, heads=2))
    assert model.tokens(x).shape == (4, 5, 8)  # CLS + 12/3 patches


@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_every_parameter_gets_a_gradient(mode, prenorm, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("vit1d", connect=mode, prenorm=prenorm, **TINY)
    x = torch.randn(4, 12)
    assert model(x).shape == (4, 3)
    every_param_gets_grad(model, x)


def test_gradcheck(gradcheck_model):
    torch.manual_seed(1)
    gradcheck_model(build("vit1d", connect=["ortho_feature", "scaled_ln:0.5"], **TINY), torch.randn(2, 12))


def _updates(model, x):
    seen = []
    hooks = [c.register_forward_hook(lambda m, i, o: seen.append((i[0], i[1], o)) and None)
             for b in model.blocks for c in (b.connect_attn, b.connect_mlp)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_orthogonal_updates_are_orthogonal_to_the_stream():
    """Orthogonal-F: <x_t, out_t - x_t> = <x_t, f_t> eps/(|x_t|^2 + eps) ~ 0 for every token; Orthogonal-G:
    only the per-sample sum over tokens vanishes; linear: the update keeps its parallel part."""
    torch.manual_seed(2)
    x = torch.randn(6, 12, dtype=torch.float64)
    for mode, dims in [("ortho_feature", (-1,)), ("ortho_global", (1, 2))]:
        for s, f, out in _updates(build("vit1d", connect=mode, **TINY).double(), x):
            upd, n2 = out - s, (s * s).sum(dims)
            torch.testing.assert_close((s * upd).sum(dims), (s * f).sum(dims) * 1e-6 / (n2 + 1e-6))
            assert ((s * upd).sum(dims).abs() <= 1e-5 * n2.sqrt() * upd.square().sum(dims).sqrt() + 1e-12).all()
            if mode == "ortho_global":
                assert (s * upd).sum(-1).abs().max() > 1e-6  # per token it is not orthogonal
    lin = _updates(build("vit1d", connect="identity", **TINY).double(), x)
    assert max((s * (o - s)).sum(-1).abs().max().item() for s, f, o in lin) > 1e-3


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_xskip_skip_path_scales_as_lambda_to_the_number_of_connections(lam):
    """Liu et al.'s argument: with the sublayers silenced the stream is lambda^(2 depth) x (two connects per
    block); with xSkip+LN each token is re-normalized to norm sqrt(d) whatever lambda."""
    model = build("vit1d", connect=f"scaled:{lam}", prenorm=False, **{**TINY, "depth": 3}).double()
    with torch.no_grad():
        for b in model.blocks:
            for lin in (b.attn.proj, b.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    x = torch.randn(4, 12, dtype=torch.float64)
    seen = _updates(model, x)
    torch.testing.assert_close(seen[-1][2], lam**6 * model.tokens(x))
    ln = _updates(build("vit1d", connect=f"scaled_ln:{lam}", prenorm=False, **{**TINY, "depth": 3}).double(), x)
    torch.testing.assert_close(ln[-1][2].norm(dim=-1), torch.full((4, 5), 8**0.5, dtype=torch.float64),
                               rtol=1e-4, atol=1e-4)


def test_prenorm_false_removes_the_pre_layer_norms():
    model = build("vit1d", prenorm=False, **TINY)
    assert all(isinstance(b.norm1, torch.nn.Identity) and isinstance(b.norm2, torch.nn.Identity)
               for b in model.blocks)


@pytest.mark.parametrize("bad", [{"dim": 6, "heads": 4}, {"patch": 5}, {"attn_impl": "flash"}, {"depth": 0},
                                 {"prenorm": 1}, {"connect": [["identity"], "identity"]}])
def test_bad_config(bad):
    with pytest.raises(LandscapeError):
        build("vit1d", **{**TINY, **bad})
