"""FC nets of docs/methods.md §A.1: brute-force forward passes, gradients, the block contract, the malicious inits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.models import build
from landscape.models.fc import FCNet

TINY = {"depth": 4, "width": 3, "in_dim": 5, "n_classes": 2}


def _manual_forward(model: FCNet, x: torch.Tensor) -> torch.Tensor:
    """docs/methods.md §A.1 written out with the model's weights, no module calls."""
    lins = [b.branch_linear for b in model.blocks]
    streams = [x, F.relu(F.linear(x, lins[0].weight, lins[0].bias))]
    for j in range(1, len(lins)):
        s = streams[-1]
        z = model.blocks[j].branch_scale * F.relu(F.linear(s, lins[j].weight, lins[j].bias))
        mode = model.blocks[j].connect.name
        nxt = {"none": z, "identity": z + s}.get(mode)
        if mode == "dense_orthogonal":
            nxt = z + s @ model.blocks[j].connect.Q.to(s.dtype).T
        if model.hyper and j >= 2:
            long = sum(streams[k] @ model.hyper_q[k - 1].to(s.dtype).T for k in range(1, j))
            nxt = nxt + long / (j - 1)
        streams.append(nxt)
    return F.linear(streams[-1], model.head.weight, model.head.bias)


@pytest.mark.parametrize("kind", ["plain", "residual", "hyper", "dense_orthogonal"])
def test_kinds_match_the_written_out_formulas(kind):
    model = build("fc", kind=kind, depth=6, width=7, in_dim=5, n_classes=3, branch_scale=0.7).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), _manual_forward(model, x))
    assert len(model.blocks) == 6 and model.blocks[0].connect.name == "none"
    if kind == "hyper":
        assert model.hyper_q.shape == (4, 7, 7) and "hyper_q" in dict(model.named_buffers())


def test_hyper_scale_constant():
    m = build("fc", kind="hyper", hyper_scale=0.25, **TINY)
    assert [m.long_scale(j) for j in (2, 3)] == [0.25, 0.25]
    assert [build("fc", kind="hyper", **TINY).long_scale(j) for j in (2, 3)] == [1.0, 0.5]


MODES = [
    ("plain", None),
    ("residual", None),
    ("hyper", None),
    ("dense_orthogonal", None),
    ("plain", "ortho_feature"),
    ("plain", "scaled_ln:2"),
    ("plain", "recursive_ln:2"),
    ("hyper", "scaled:0.5"),
    ("plain", ["identity", "ortho_global", "none"]),
]


@pytest.mark.parametrize("kind,connect", MODES)
def test_gradients(kind, connect, gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("fc", kind=kind, connect=connect, **TINY)
    x = torch.randn(3, 5)
    assert model(x).shape == (3, 2)
    # positive biases keep every unit alive so that every parameter provably gets a gradient
    with torch.no_grad():
        for b in model.blocks:
            b.branch_linear.bias.fill_(0.5)
    every_param_gets_grad(model, x)
    gradcheck_model(model, x[:2])


@pytest.mark.parametrize("kind", ["plain", "residual", "hyper"])
def test_block_contract(kind):
    """block(x_l) returns x_{l+1} (the next block's input); block.branch returns ReLU(W x + b)."""
    model = build("fc", kind=kind, depth=5, width=6, in_dim=4).double()
    ins, outs, branch = [], [], []

    def record(m, i, o):
        ins.append(i[0])
        outs.append(o)

    hooks = [b.register_forward_hook(record) for b in model.blocks]
    hooks += [b.branch.register_forward_hook(lambda m, i, o: branch.append((i[0], o))) for b in model.blocks]
    model(torch.randn(3, 4, dtype=torch.float64))
    for h in hooks:
        h.remove()
    for j in range(len(model.blocks) - 1):
        assert outs[j] is ins[j + 1]
    for j, (inp, z) in enumerate(branch):
        torch.testing.assert_close(z, torch.relu(model.blocks[j].branch_linear(inp)))
    assert all(isinstance(b.branch_linear, torch.nn.Linear) for b in model.blocks)


def test_glorot_init_zero_biases_and_gain():
    model = build("fc", depth=3, width=400, in_dim=200, gain=2.0)
    lin = model.blocks[1].branch_linear
    assert abs(lin.weight.std().item() / (2.0 * (2 / 800) ** 0.5) - 1) < 0.02
    assert abs(model.blocks[0].branch_linear.weight.std().item() / (2.0 * (2 / 600) ** 0.5) - 1) < 0.02
    assert abs(model.head.weight.std().item() / ((2 / 410) ** 0.5) - 1) < 0.05
    assert all((b.branch_linear.bias == 0).all() for b in model.blocks) and (model.head.bias == 0).all()


def test_same_seed_same_weights_for_every_kind():
    ref = dict(build("fc", kind="plain", seed=3, **TINY).named_parameters())
    for kind in ["residual", "hyper", "dense_orthogonal"]:
        sd = dict(build("fc", kind=kind, seed=3, **TINY).named_parameters())
        for k, v in ref.items():
            torch.testing.assert_close(sd[k], v, rtol=0, atol=0)
    other = dict(build("fc", kind="plain", seed=4, **TINY).named_parameters())
    assert not torch.equal(other["blocks.1.branch.linear.weight"], ref["blocks.1.branch.linear.weight"])


@pytest.mark.parametrize(
    "kind,connect,skip",
    [
        ("residual", None, "eye"),
        ("hyper", None, "eye"),
        ("plain", "scaled:0.5", "half"),
        ("dense_orthogonal", None, "Q"),
        ("plain", None, "zero"),
    ],
)
def test_cancel_skip_init(kind, connect, skip):
    plain = build("fc", kind="plain", seed=1, **TINY)
    mal = build("fc", kind=kind, connect=connect, init="cancel_skip", seed=1, branch_scale=2.0, **TINY)
    for j, (bp, bm) in enumerate(zip(plain.blocks, mal.blocks)):
        s = {"eye": torch.eye(3), "half": 0.5 * torch.eye(3), "zero": torch.zeros(3, 3)}.get(skip)
        if skip == "Q" and j > 0:
            s = bm.connect.Q
        expect = bp.branch_linear.weight - (s / 2.0 if j > 0 else 0)
        torch.testing.assert_close(bm.branch_linear.weight, expect)
    torch.testing.assert_close(mal.head.weight, plain.head.weight)
    if kind != "hyper":  # the linearized nets (ReLU → identity) agree at init
        x = torch.randn(4, 5)
        lin_p, lin_m = x, x
        for j, (bp, bm) in enumerate(zip(plain.blocks, mal.blocks)):
            lp, lm = bp.branch_linear(lin_p), bm.branch_linear(lin_m)
            lin_p = lp if j == 0 else 2.0 * lp
            lin_m = lm if j == 0 else bm.connect(lin_m, 2.0 * lm)
        torch.testing.assert_close(lin_m, lin_p, rtol=1e-5, atol=1e-5)


def test_cancel_skip_needs_a_linear_skip():
    with pytest.raises(LandscapeError, match="cancel_skip"):
        build("fc", connect="ortho_feature", init="cancel_skip", **TINY)


def test_dead_fraction_on_fresh_random_inputs():
    for kind in ["plain", "residual"]:
        model = build("fc", kind=kind, depth=4, width=64, in_dim=20, dead_fraction=0.25, seed=2)
        z = []
        hooks = [b.branch.register_forward_hook(lambda m, i, o, z=z: z.append(o)) for b in model.blocks]
        with torch.no_grad():
            model(torch.randn(4096, 20, generator=torch.Generator().manual_seed(9)))
        for h in hooks:
            h.remove()
        for act in z:
            dead = (act == 0).all(0).float().mean().item()
            assert 0.25 <= dead <= 0.25 + 2 / 64
    alive = build("fc", depth=3, width=64, in_dim=20)
    with torch.no_grad():
        z = torch.relu(alive.blocks[0].branch_linear(torch.randn(4096, 20)))
    assert (z == 0).all(0).float().mean().item() == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "dense"},
        {"depth": 0},
        {"width": 2.5},
        {"init": "xavier"},
        {"connect": ["identity"]},
        {"dead_fraction": 1.5},
        {"connect": "bogus"},
    ],
)
def test_bad_config(bad):
    with pytest.raises(LandscapeError):
        build("fc", **{**TINY, **bad})


# ---- zero-mean pre-activation branches (block="preact") ----

def _preact_manual(model: FCNet, x: torch.Tensor) -> torch.Tensor:
    """s_1 = W_0 x + b_0; s_{j+1} = s_j + c (W_j ReLU(LN(s_j)) + b_j); head(LN(s_L)), written out."""
    lins = [b.branch_linear for b in model.blocks]
    s = F.linear(x, lins[0].weight, lins[0].bias)
    for j in range(1, len(lins)):
        n = model.blocks[j].branch.norm
        f = F.linear(F.relu(F.layer_norm(s, s.shape[-1:], n.weight, n.bias)), lins[j].weight, lins[j].bias)
        s = s + model.blocks[j].branch_scale * f
    n = model.head_norm
    return F.linear(F.layer_norm(s, s.shape[-1:], n.weight, n.bias), model.head.weight, model.head.bias)


def test_preact_matches_the_written_out_formula():
    model = build("fc", kind="residual", block="preact", init="he", depth=5, width=7, in_dim=5, n_classes=3,
                  branch_scale="inv_sqrt_depth").double()
    with torch.no_grad():  # non-trivial biases and LN affine parameters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), _preact_manual(model, x))
    assert model.blocks[1].branch_scale == pytest.approx(0.5)  # 1/sqrt(4 hidden blocks)


def _connect_inputs(model, x):
    seen = []
    hooks = [b.connect.register_forward_hook(lambda m, i, o: seen.append((i[0], i[1])) and None)
             for b in model.blocks[1:]]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_preact_branch_is_zero_mean_and_not_aligned_with_the_stream():
    """Postact: ReLU branches on a non-negative stream give cos(x, f) > 0 for every sample (Oh et al.'s
    parallel component is forced); preact: mean f ≈ 0 and cos(x, f) takes both signs with mean ≈ 0."""
    x = torch.randn(512, 40, generator=torch.Generator().manual_seed(0))
    post = _connect_inputs(build("fc", kind="residual", depth=9, width=128, seed=1), x)
    assert min(F.cosine_similarity(s, f, dim=1).min().item() for s, f in post) > 0
    pre = _connect_inputs(build("fc", kind="residual", block="preact", init="he", depth=9, width=128, seed=1), x)
    cos = torch.stack([F.cosine_similarity(s, f, dim=1) for s, f in pre])
    f = torch.stack([f for _, f in pre])
    assert abs(f.mean().item()) < 0.05 * f.std().item()
    assert abs(cos.mean().item()) < 0.05 and (cos < 0).float().mean().item() > 0.25


@pytest.mark.parametrize("scale,expect", [(1.0, 9.0), ("inv_sqrt_depth", 1.5)])
def test_preact_stream_growth_matches_the_variance_recursion(scale, expect):
    """He init: Var f_j = (2/n) Σ_k E[ReLU(LN s)_k²] = 1 per coordinate, the embedding gives Var s_1 = 2 on
    unit-variance inputs, so ‖s_L‖²/‖s_1‖² = (2 + L c²)/2: 9 for c = 1, 1.5 for c = 1/√L (L = 16).
    The postact residual net grows by orders of magnitude over the same depth."""
    x = torch.randn(512, 40, generator=torch.Generator().manual_seed(0))
    seen = _connect_inputs(build("fc", kind="residual", block="preact", init="he", depth=17, width=128,
                                 branch_scale=scale, seed=2), x)
    last = seen[-1][0] + seen[-1][1]
    ratio = last.square().sum(1).mean() / seen[0][0].square().sum(1).mean()
    assert ratio.item() == pytest.approx(expect, rel=0.15)
    post = _connect_inputs(build("fc", kind="residual", depth=17, width=128, seed=2), x)
    assert (post[-1][0].square().sum(1).mean() / post[0][0].square().sum(1).mean()).item() > 100


def test_he_init():
    model = build("fc", block="preact", init="he", depth=3, width=400, in_dim=200, gain=1.0)
    assert abs(model.blocks[1].branch_linear.weight.std().item() / (2 / 400) ** 0.5 - 1) < 0.02
    assert abs(model.blocks[0].branch_linear.weight.std().item() / (2 / 200) ** 0.5 - 1) < 0.02
    assert abs(model.head.weight.std().item() / ((2 / 410) ** 0.5) - 1) < 0.05


@pytest.mark.parametrize("norm,connect", [("ln", None), ("bn", "ortho_feature"), ("none", "scaled:0.5")])
def test_preact_gradients(norm, connect, gradcheck_model, every_param_gets_grad):
    torch.manual_seed(0)
    model = build("fc", kind="residual", block="preact", norm=norm, connect=connect, init="he", **TINY)
    x = torch.randn(4, 5)
    assert model(x).shape == (4, 2)
    every_param_gets_grad(model, x)
    gradcheck_model(model.eval(), x[:3])


@pytest.mark.parametrize("bad", [{"block": "pre"}, {"norm": "gn"}, {"branch_scale": "sqrt"}, {"branch_scale": 0},
                                 {"block": "preact", "init": "cancel_skip"},
                                 {"block": "preact", "dead_fraction": 0.2}])
def test_bad_preact_config(bad):
    with pytest.raises(LandscapeError):
        build("fc", **{**TINY, **bad})
