"""Connect: every mode against a brute-force formula, gradchecks, the orthogonality of the update."""

from __future__ import annotations

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.models.connect import (
    Connect,
    ConnectMode,
    degenerate_projection,
    haar_orthogonal,
    modes_per_block,
    orthogonal_split,
    parse_mode,
)

SHAPES = {"fc": (3, 5), "tokens": (2, 3, 4), "conv": (2, 3, 2, 2)}
FEATURES = {"fc": 5, "tokens": 4, "conv": 3}
ALL_MODES = [
    "none",
    "identity",
    "scaled:0.5",
    "scaled_ln:2",
    "recursive_ln:3",
    "ortho_feature",
    "ortho_global",
    "dense_orthogonal",
    "dense_orthogonal:0.4",
]


def _pair(kind, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(SHAPES[kind], generator=g, dtype=dtype),
        torch.randn(SHAPES[kind], generator=g, dtype=dtype),
    )


def _vectors(t, kind, globally):
    """Rows = the vectors the projection acts on (brute-force layout, independent of reduce_dims)."""
    if globally:
        return t.reshape(t.shape[0], -1)
    if kind == "conv":
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])


def _ln(t, kind, eps=1e-5):
    """Affine-free LN over the feature dim (fc/tokens) or over C, H, W per sample (conv)."""
    dims = (1, 2, 3) if kind == "conv" else (-1,)
    mu = t.mean(dims, keepdim=True)
    var = t.var(dims, keepdim=True, unbiased=False)
    return (t - mu) / torch.sqrt(var + eps)


def test_parse_aliases_keywords_and_canonical_names():
    assert parse_mode("linear") == ConnectMode("identity")
    assert parse_mode("plain") == ConnectMode("none")
    assert parse_mode("xskip:0.5") == parse_mode("scaled", scale=0.5) == ConnectMode("scaled", 0.5)
    assert parse_mode("rskip_ln:3") == parse_mode("recursive_ln", steps=3) == ConnectMode("recursive_ln", 3)
    assert parse_mode("ortho_feature") == ConnectMode("ortho_feature", 1.0)
    assert str(parse_mode("ortho_feature", prob=0.25)) == "ortho_feature:0.25"
    assert str(parse_mode("ortho_global:1")) == "ortho_global"
    assert str(parse_mode("dense_orth")) == "dense_orthogonal"
    assert str(parse_mode(" Scaled_LN:2 ")) == "scaled_ln:2"
    assert Connect("scaled", scale=0.5).mode == Connect("scaled:0.5").mode == "scaled:0.5"


@pytest.mark.parametrize(
    "bad",
    [
        "bogus",
        "identity:2",
        "recursive_ln:1.5",
        "recursive_ln:0",
        "ortho_feature:1.5",
        "scaled:abc",
        "dense_orthogonal:-0.1",
        "scaled:inf",
    ],
)
def test_parse_rejects_bad_modes(bad):
    with pytest.raises(LandscapeError):
        parse_mode(bad)


def test_parse_rejects_conflicting_or_foreign_keywords():
    with pytest.raises(LandscapeError, match="not both"):
        parse_mode("scaled:0.5", scale=0.5)
    with pytest.raises(LandscapeError, match="no parameter"):
        parse_mode("identity", prob=0.5)
    with pytest.raises(LandscapeError, match="feature count"):
        Connect("scaled_ln:1")
    with pytest.raises(LandscapeError, match="stream kind"):
        Connect("identity", kind="image")


def test_modes_per_block():
    assert modes_per_block("identity", 3) == ["identity"] * 3
    assert modes_per_block(["none", "identity"], 2) == ["none", "identity"]
    with pytest.raises(LandscapeError, match="3 modes"):
        modes_per_block(["none"], 3)


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_matches_its_formula_and_gradchecks(kind, mode):
    torch.manual_seed(0)
    c = Connect(mode, FEATURES[kind], kind).double()
    x, f = _pair(kind)
    x0, f0 = x.clone(), f.clone()
    out = c(x, f)
    assert torch.equal(x, x0) and torch.equal(f, f0)  # inputs untouched
    assert out.shape == x.shape
    name, val = c.name, c.value
    if name == "none":
        ref = f
    elif name == "identity":
        ref = x + f
    elif name == "scaled":
        ref = val * x + f
    elif name == "scaled_ln":
        ref = _ln(val * x + f, kind)
    elif name == "recursive_ln":
        ref = _ln(x + f, kind)
        for _ in range(val - 1):
            ref = _ln(x + ref, kind)
    elif name == "dense_orthogonal":
        q = c.Q.double()
        xv = _vectors(x, kind, False) @ q.T
        ref = (
            xv.reshape(x.shape[0], 2, 2, 3).permute(0, 3, 1, 2) if kind == "conv" else xv.reshape(x.shape)
        ) + f
    else:
        xv, fv = _vectors(x, kind, name == "ortho_global"), _vectors(f, kind, name == "ortho_global")
        rows = [xi + fi - (torch.dot(xi, fi) / (torch.dot(xi, xi) + 1e-6)) * xi for xi, fi in zip(xv, fv)]
        ref_v = torch.stack(rows)
        if kind == "conv" and name == "ortho_feature":
            ref = ref_v.reshape(x.shape[0], 2, 2, 3).permute(0, 3, 1, 2)
        else:
            ref = ref_v.reshape(x.shape)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    xg, fg = x.clone().requires_grad_(), f.clone().requires_grad_()
    assert torch.autograd.gradcheck(c, (xg, fg))


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("mode", ["ortho_feature", "ortho_global"])
def test_orthogonal_update_is_orthogonal_to_the_stream(kind, mode):
    c = Connect(mode, FEATURES[kind], kind)
    x, f = _pair(kind, seed=3)
    upd = c(x, f) - x
    xv, uv = _vectors(x, kind, mode == "ortho_global"), _vectors(upd, kind, mode == "ortho_global")
    cos = (xv * uv).sum(1) / (xv.norm(dim=1) * uv.norm(dim=1))
    assert cos.abs().max() < 1e-5
    # the split is exact: f = f_par + f_perp, f_par ∥ x
    f_par, f_perp = orthogonal_split(x, f, c.reduce_dims)
    torch.testing.assert_close(f_par + f_perp, f)
    torch.testing.assert_close(upd, f_perp)


def test_reduce_dims_per_kind_and_mode():
    assert Connect("ortho_feature", kind="fc").reduce_dims == (-1,)
    assert Connect("ortho_feature", kind="tokens").reduce_dims == (-1,)
    assert Connect("ortho_feature", kind="conv").reduce_dims == (1,)
    assert Connect("ortho_global", kind="conv").reduce_dims == (1, 2, 3)
    assert Connect("ortho_global", kind="tokens").reduce_dims == (1, 2)
    assert Connect("identity", kind="conv").reduce_dims == (1,)


def test_eps_is_added_and_low_precision_accumulates_in_float32():
    x = torch.zeros(2, 4, dtype=torch.float64)
    f = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(Connect("ortho_feature")(x, f), f)  # ‖x‖² = 0: s = 0/ε, no NaN
    xb, fb = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    out = Connect("ortho_feature")(xb, fb)
    assert out.dtype == torch.bfloat16
    ref = Connect("ortho_feature")(xb.double(), fb.double())
    torch.testing.assert_close(out.double(), ref, rtol=0.05, atol=0.05)


def test_simple_identities():
    x, f = _pair("fc")
    assert Connect("none")(x, f) is f
    torch.testing.assert_close(Connect("scaled:1")(x, f), Connect("identity")(x, f))
    c = Connect("recursive_ln:1", 5).double()
    torch.testing.assert_close(c(x, f), torch.nn.functional.layer_norm(x + f, (5,)))
    with pytest.raises(LandscapeError, match="differ"):
        Connect("identity")(x, f[:, :3])


def test_recursive_ln_steps_have_their_own_norms():
    c = Connect("recursive_ln:3", 6, "tokens")
    assert len(c.norms) == 3 and len({id(n.weight) for n in c.norms}) == 3
    g = Connect("scaled_ln:1", 6, "conv")
    assert isinstance(g.norms[0], torch.nn.GroupNorm) and g.norms[0].num_groups == 1


def test_dense_orthogonal_q_is_an_orthogonal_buffer():
    c = Connect("dense_orthogonal", 7)
    assert "Q" in dict(c.named_buffers()) and not list(c.parameters())
    q = c.Q.double()
    torch.testing.assert_close(q.T @ q, torch.eye(7, dtype=torch.float64), atol=1e-6, rtol=0)
    conv = Connect("dense_orthogonal", 3, "conv")
    x, f = _pair("conv", dtype=torch.float32)
    ref = torch.nn.functional.conv2d(x, conv.Q[:, :, None, None]) + f
    torch.testing.assert_close(conv(x, f), ref)


def test_haar_orthogonal_is_not_biased_towards_identity_or_sign():
    qs = torch.stack([haar_orthogonal(3, torch.Generator().manual_seed(s)) for s in range(400)])
    # Haar measure: E[Q] = 0
    assert qs.mean(0).abs().max() < 0.12


def test_degenerate_skip_zeroes_the_requested_fraction():
    q = degenerate_projection(10, 0.3, torch.Generator().manual_seed(0)).double()
    eig = torch.linalg.eigvalsh(q)
    torch.testing.assert_close(
        eig, torch.tensor([0.0] * 3 + [1.0] * 7, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(q, q.T)
    c = Connect("dense_orthogonal:0.3", 10)
    assert torch.linalg.matrix_rank(c.Q, atol=1e-4).item() == 7
    torch.testing.assert_close(
        Connect("dense_orthogonal", 4, degenerate=0.0).Q, torch.eye(4), atol=1e-6, rtol=0
    )


def test_stochastic_orthogonal_updates():
    x, f = _pair("fc")
    lin, orth = x + f, Connect("ortho_feature")(x, f)
    c = Connect("ortho_feature:0.5").train()
    torch.manual_seed(0)
    seen = []
    for _ in range(60):
        out = c(x, f)
        seen.append(c.last_orthogonal)
        torch.testing.assert_close(out, orth if c.last_orthogonal else lin)
    assert 15 < sum(seen) < 45
    c.eval()
    torch.testing.assert_close(c(x, f), orth)
    never = Connect("ortho_feature:0").train()
    torch.testing.assert_close(never(x, f), lin)
    torch.testing.assert_close(never.eval()(x, f), lin)


@pytest.mark.parametrize("kind,shape", [("fc", (6, 4)), ("tokens", (3, 5, 4)), ("conv1d", (3, 4, 5)),
                                        ("conv", (2, 4, 3, 3))])
def test_bn_ablation_modes_normalize_each_feature_over_everything_else(kind, shape):
    """scaled_bn: BN(λx + f); recursive_bn: y_k = BN_k(x + y_{k-1}); features on the last dim (fc/tokens) or dim 1."""
    torch.manual_seed(0)
    x, f = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    feat = -1 if kind in ("fc", "tokens") else 1

    def bn(v):
        dims = tuple(d for d in range(v.dim()) if d != v.dim() + feat and d != feat)
        mu = v.mean(dims, keepdim=True)
        var = v.var(dims, keepdim=True, unbiased=False)
        return (v - mu) / torch.sqrt(var + 1e-5)

    c = Connect("xskip_bn:0.5", 4, kind).double()
    torch.testing.assert_close(c(x, f), bn(0.5 * x + f))
    r = Connect("rskip_bn:2", 4, kind).double()
    torch.testing.assert_close(r(x, f), bn(x + bn(x + f)))
    assert len(r.norms) == 2 and c.mode == "scaled_bn:0.5"
