"""Stream-vs-update probes equal docs/methods.md §B.3's projection formulas evaluated vector by vector on (x, f)
pairs recomputed by a hook-free manual forward: landscape Connect sites (fc, tokens, conv; feature
and global), torchvision-style blocks (f = bn2 output, later overwritten in place by `out += x`),
timm-style and torch pre-LN transformer layers (stream = input of the norm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.probes import STREAM_METRICS, probe, records_by_block, run_probes, stream_stats

from .lookalikes import ConvNet, FCNet, TinyResNet, TinyViT, TokenNet


def reference(pairs, dims, eps=1e-6):
    """Mean over all vectors of all (x, f) pairs of the B.3 statistics, one vector at a time."""
    rows = []
    for x, f in pairs:
        x, f = x.detach().numpy(), f.detach().numpy()
        keep = [d for d in range(x.ndim) if d not in dims]
        xv = np.transpose(x, keep + list(dims)).reshape(-1, int(np.prod([x.shape[d] for d in dims])))
        fv = np.transpose(f, keep + list(dims)).reshape(xv.shape)
        for a, b in zip(xv, fv):
            n2 = max(a @ a, eps)
            f_par = (a @ b) / n2 * a
            f_perp = b - f_par
            par, perp = max(f_par @ f_par, eps), max(f_perp @ f_perp, eps)
            rows.append([n2, par, perp, par / n2, perp / n2, (a @ b) / math.sqrt(n2 * max(b @ b, eps))])
    return dict(zip(STREAM_METRICS, np.mean(rows, 0)))


def check(got, expect):
    for m in STREAM_METRICS:
        assert got[m] == pytest.approx(expect[m], rel=1e-10, abs=1e-14), m


@pytest.mark.parametrize("mode", ["identity", "ortho", "none"])
def test_fc_connect_sites(mode):
    torch.manual_seed(0)
    model = FCNet(depth=3, mode=mode)
    X = torch.randn(6, 6)
    with probe(model, metrics="stream") as p:
        model(X)
    got = records_by_block(p.records)
    x = F.relu(model.inp(X))
    for i, b in enumerate(model.blocks):
        f = b.branch(x)
        check(got[f"blocks.{i}"], reference([(x, f)], (1,)))
        x = b.connect(x, f)


@pytest.mark.parametrize("reduce", ["feature", "global"])
def test_token_blocks_have_two_sites(reduce):
    torch.manual_seed(1)
    model = TokenNet(depth=2, mode="ortho")
    X = torch.randn(3, 5, 4)
    with probe(model, metrics="stream", reduce=reduce) as p:
        model(X)
    got = records_by_block(p.records)
    assert list(got) == ["blocks.0:attn", "blocks.0:mlp", "blocks.1:attn", "blocks.1:mlp"]
    dims = (2,) if reduce == "feature" else (1, 2)
    x = model.embed(X)
    for i, b in enumerate(model.blocks):
        h = b.ln1(x)
        a = b.mix(h).mean(1, keepdim=True).expand_as(x) + b.mix(h)
        check(got[f"blocks.{i}:attn"], reference([(x, a)], dims))
        x = b.connect_attn(x, a)
        m = b.mlp(b.ln2(x))
        check(got[f"blocks.{i}:mlp"], reference([(x, m)], dims))
        x = b.connect_mlp(x, m)


@pytest.mark.parametrize(("reduce_dims", "reduce", "dims"),
                         [((1,), "feature", (1,)), ((1, 2, 3), "feature", (1, 2, 3)), ((1,), "global", (1, 2, 3))])
def test_conv_feature_uses_the_connects_dims(reduce_dims, reduce, dims):
    torch.manual_seed(2)
    model = ConvNet(mode="ortho", reduce_dims=reduce_dims)
    X = torch.randn(2, 2, 4, 5)
    with probe(model, metrics="stream", reduce=reduce) as p:
        model(X)
    got = records_by_block(p.records)
    x = model.stem(X)
    for i, b in enumerate(model.blocks):
        f = torch.tanh(b.conv(x))
        check(got[f"blocks.{i}"], reference([(x, f)], dims))
        x = b.connect(x, f)


def test_torchvision_style_block_reads_f_before_the_inplace_add():
    torch.manual_seed(3)
    model = TinyResNet().eval()
    X = torch.randn(3, 2, 6, 6)
    with probe(model, metrics="stream") as p:
        model(X)
    got = records_by_block(p.records)
    assert list(got) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    with torch.no_grad():
        x = model.relu(model.bn1(model.conv1(X)))
        for name in got:
            b = model.get_submodule(name)
            f = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))
            s = b.downsample(x) if b.downsample is not None else x
            check(got[name], reference([(s, f)], (1,)))
            x = b(x)


def test_timm_style_vit_streams_are_norm_inputs():
    torch.manual_seed(4)
    model = TinyViT(depth=2)
    X = torch.randn(2, 3, 4)
    with probe(model, metrics="stream", step=7) as p:
        model(X)
    assert {r["step"] for r in p.records} == {7}
    got = records_by_block(p.records)
    x = model.patch_embed(X)
    for i, b in enumerate(model.blocks):
        a = b.attn(b.norm1(x))
        check(got[f"blocks.{i}:attn"], reference([(x, a)], (2,)))
        x = x + a
        m = b.mlp(b.norm2(x))
        check(got[f"blocks.{i}:mlp"], reference([(x, m)], (2,)))
        x = x + m


def test_torch_pre_ln_encoder_layer():
    torch.manual_seed(5)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True, batch_first=True)
    model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    X = torch.randn(2, 3, 4)
    with probe(model, metrics="stream") as p:
        model(X)
    got = records_by_block(p.records)
    assert list(got) == ["1.layers.0:attn", "1.layers.0:mlp", "1.layers.1:attn", "1.layers.1:mlp"]
    x = model[0](X)
    for i, b in enumerate(model[1].layers):
        h = b.norm1(x)
        a = b.self_attn(h, h, h, need_weights=False)[0]
        check(got[f"1.layers.{i}:attn"], reference([(x, a)], (2,)))
        x = x + a
        m = b.linear2(b.activation(b.linear1(b.norm2(x))))
        check(got[f"1.layers.{i}:mlp"], reference([(x, m)], (2,)))
        x = x + m


def test_user_named_branch_and_stream_alternatives():
    torch.manual_seed(6)
    model = TinyResNet().eval()
    X = torch.randn(2, 2, 6, 6)
    with probe(model, blocks="layer*.*", metrics="stream", branch="bn2", stream=["downsample", "input"]) as p:
        model(X)
    with probe(model, metrics="stream") as q:
        model(X)
    assert p.records == q.records
    with pytest.raises(LandscapeError, match="not a submodule"):
        probe(model, blocks="layer*.*", metrics="stream", branch="bn9")


def test_data_set_means_are_over_all_vectors():
    torch.manual_seed(7)
    model = FCNet(depth=2, mode="ortho")
    X = torch.randn(9, 6)
    whole = run_probes(model, None, X, metrics="stream")
    parts = run_probes(model, None, X, metrics="stream", batch_size=4)
    assert [r["value"] for r in whole] == pytest.approx([r["value"] for r in parts], rel=1e-12)
    x = F.relu(model.inp(X))
    expect = reference([(x, model.blocks[0].branch(x))], (1,))
    check(records_by_block(whole)["blocks.0"], expect)


def test_stream_stats_function_and_degenerate_vectors():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    f = torch.tensor([[2.0, 1.0], [1.0, 1.0], [-3.0, -4.0]])
    got = stream_stats(x, f)
    check(got, reference([(x, f)], (1,)))
    # an exactly antiparallel update has rho_par = 1, cos = -1 and only ε of orthogonal energy
    single = stream_stats(x[2:], f[2:])
    assert single["cos_x_out"] == pytest.approx(-1.0, rel=1e-12)
    assert single["rho_par"] == pytest.approx(1.0, rel=1e-12)
    assert single["f_ortho_norm2"] == pytest.approx(1e-6, rel=1e-9)


def test_float32_inputs_agree_with_float64_formulas():
    torch.manual_seed(8)
    x = torch.randn(64, 4, 32, dtype=torch.float32)
    f = 0.3 * x + torch.randn(64, 4, 32, dtype=torch.float32)
    expect = reference([(x.double(), f.double())], (2,))
    got = stream_stats(x, f)
    for m in STREAM_METRICS:
        assert got[m] == pytest.approx(expect[m], rel=1e-5), m


@pytest.mark.parametrize(("shape", "dims"), [((6, 5, 4, 3), (1,)), ((3, 4, 5), (2,)), ((7, 9), (1,)),
                                             ((4, 3, 5, 5), (1, 2, 3)), ((2, 3, 4, 5), (1, 3)),
                                             ((64, 8, 9, 9), (1,))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_vector_products_equal_the_per_site_reference(shape, dims, dtype):
    from landscape.probes.stream import vector_products

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    f = 0.01 * torch.randn(shape, generator=gen, dtype=torch.float64) + 0.3 * x   # small, partly parallel
    ref = ((x * f).sum(dims), (x * x).sum(dims), (f * f).sum(dims))
    got = vector_products(x.to(dtype), f.to(dtype), dims)
    rel = 1e-12 if dtype == torch.float64 else 2e-5
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == dtype
        assert torch.allclose(g.double(), r, rtol=rel, atol=rel * float(r.abs().max()))
