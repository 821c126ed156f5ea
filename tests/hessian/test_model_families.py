"""HessianOperator on the model families researchers measure, each against an independent reference:
default-attention transformers (nn.TransformerEncoder, a tiny HF GPT-2 from a config), the zoo's ResNet at
CIFAR size, tied and frozen weights; and the models it must refuse (wrong double backward, NaN weights)."""

from __future__ import annotations

import copy
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian

from . import tiny

D = torch.float64


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _torch_hvp(model: nn.Module, loss, X, y, V: torch.Tensor) -> torch.Tensor:
    """H V by torch.autograd.functional.hvp on a flat float64 parameter vector (torch's own double-backward
    trick, none of landscape's code), under the math attention kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = copy.deepcopy(model).double()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        ps, i = {}, 0
        for (n, _), s in zip(named, shapes):
            k = math.prod(s)
            ps[n] = theta[i : i + k].view(s)
            i += k
        return loss(torch.func.functional_call(model, ps, (X.double() if X.is_floating_point() else X,)), y)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.stack([torch.autograd.functional.hvp(f, flat, v)[1] for v in V.double().T], 1)


def _fd_hvp(model: nn.Module, loss, X, y, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central finite difference of plain autograd gradients, moving the model's own (float64) parameters:
    (g(θ + εv) − g(θ − εv)) / 2ε. Tied parameters move together, as they are one tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]

    def g(shift: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, v.split(sizes)):
                p.add_(shift * d.view_as(p))
        try:
            out = torch.autograd.grad(loss(model(X), y), params)
        finally:
            with torch.no_grad():
                for p, d in zip(params, v.split(sizes)):
                    p.sub_(shift * d.view_as(p))
        return torch.cat([t.reshape(-1) for t in out])

    return (g(eps) - g(-eps)) / (2 * eps)


class _Encoder(nn.Module):
    """nn.TransformerEncoder with every default (fused SDPA attention, relu, post-norm, dropout in eval)
    except a narrow feed-forward, then mean pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16), 2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(x).mean(0))


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_default_transformer_encoder_runs_through_the_math_kernel():
    torch.manual_seed(0)
    model = _Encoder().double().eval()
    X = torch.randn(5, 4, 8, dtype=D)  # [sequence, batch, features]: batch_first=False by default
    y = torch.randint(0, 3, (4,))
    loss = F.cross_entropy
    op = HessianOperator(model, loss, [(X, y)], merge_batches=False)
    assert op.info()["attention_kernel"] == "math"
    V = torch.randn(op.dim, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    ref = _torch_hvp(model, loss, X, y, V)
    assert _rel(op.matmat(V), ref) < 1e-10
    op32 = HessianOperator(model.float(), loss, [(X.float(), y)], merge_batches=False)
    assert op32.info()["attention_kernel"] == "math"
    assert _rel(op32.matmat(V.float()), ref) < 1e-4
    assert all(not m.training for m in model.modules())


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(cfg).double().eval()  # random init, no download; SDPA attention

    class NextToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = lm

        def forward(self, ids):
            return self.lm(input_ids=ids).logits[:, -1]

    return NextToken().eval()


def test_tiny_gpt2_from_a_config_with_tied_embeddings():
    model = _gpt2()
    assert model.lm.lm_head.weight is model.lm.transformer.wte.weight
    g = torch.Generator().manual_seed(2)
    ids, y = torch.randint(0, 11, (4, 6), generator=g), torch.randint(0, 11, (4,), generator=g)
    op = HessianOperator(model, F.cross_entropy, (ids, y))
    assert op.info()["attention_kernel"] == "math"
    assert op.dim == sum(p.numel() for p in model.parameters())  # the tied matrix counted once
    V = torch.randn(op.dim, 2, dtype=D, generator=g)
    HV = op.matmat(V)
    assert _rel(HV, _torch_hvp(model, F.cross_entropy, ids, y, V)) < 1e-10
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        fd = _fd_hvp(model, F.cross_entropy, ids, y, V[:, 0])
    assert _rel(HV[:, 0], fd) < 1e-7
    # λmax's data error bar runs per-batch products through the same math kernel
    from landscape.hessian import slq_density

    batched = HessianOperator(model, F.cross_entropy, list(zip(ids.split(1), y.split(1))), merge_batches=False)
    sd = slq_density(batched, 12, 2, top_k=1)
    assert sd.top.converged and math.isfinite(sd.to_dict()["lambda_max_stderr"])


def test_tiny_bert_from_a_config_falls_back_from_an_asymmetric_backend(monkeypatch):
    """BERT's word embeddings have padding_idx: autograd's gradient skips the padding row, forward-mode AD
    does not, so forward-over-reverse products are not symmetric. "auto" must notice and use double
    backward even when func is the faster; pinning func is refused, naming the cause."""
    from landscape.hessian.operators import plan as _plan

    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=8, num_labels=3)
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(cfg).double().eval()

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids):
            return self.bert(input_ids=ids).logits

    model = Logits().eval()
    g = torch.Generator().manual_seed(4)
    ids, y = torch.randint(0, 13, (4, 6), generator=g), torch.randint(0, 3, (4,), generator=g)
    ids[:, -1] = cfg.pad_token_id
    monkeypatch.setattr(_plan.Planner, "pick", lambda self, trials: "func" if "func" in trials else "double_backward")
    monkeypatch.setattr(_plan.Planner, "func_trial_pointless", lambda *a: False)
    op = HessianOperator(model, F.cross_entropy, (ids, y))
    assert op.backend == "double_backward" and "padding_idx" in op.info()["rejected"]["func"]
    assert op.info()["attention_kernel"] == "math"
    V = torch.randn(op.dim, 2, dtype=D, generator=g)
    assert _rel(op.matmat(V), _torch_hvp(model, F.cross_entropy, ids, y, V)) < 1e-10
    with pytest.raises(LandscapeError, match="not symmetric.*padding_idx"):
        HessianOperator(model, F.cross_entropy, (ids, y), backend="func")


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.pos = nn.Embedding(6, 3, padding_idx=0), nn.Parameter(torch.randn(4, 3))
        self.head = nn.Linear(3, 2)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids) + self.pos).mean(1))


_IDS, _Y = torch.tensor([[1, 0, 2, 5], [0, 1, 1, 4], [3, 3, 0, 2]]), torch.tensor([0, 1, 1])


def test_exact_oracle_with_padding_idx_matches_reverse_over_reverse():
    torch.manual_seed(0)
    model = _Embed().double()
    H = exact_hessian(model, F.cross_entropy, (_IDS, _Y))
    eye = torch.eye(H.shape[0], dtype=D)
    torch.testing.assert_close(H, _torch_hvp(model, F.cross_entropy, _IDS, _Y, eye), rtol=1e-10, atol=1e-12)


def test_ggn_with_padding_idx_falls_back_like_the_hessian(monkeypatch):
    """J v by forward mode moves the padding row, Jᵀu by reverse mode does not: func's GGN products are not
    symmetric either, and auto falls back to the double-vjp backend, which matches the brute-force GGN."""
    from landscape.hessian import GGNOperator, exact_ggn
    from landscape.hessian.operators import plan as _plan

    torch.manual_seed(0)
    model = _Embed().double()
    monkeypatch.setattr(_plan.Planner, "pick", lambda self, trials: "func" if "func" in trials else "double_backward")
    monkeypatch.setattr(_plan.Planner, "func_trial_pointless", lambda *a: False)
    op = GGNOperator(model, F.cross_entropy, (_IDS, _Y))
    assert op.backend == "double_backward" and "not symmetric" in op.info()["rejected"]["func"]
    V = torch.randn(op.dim, 2, dtype=D)
    torch.testing.assert_close(op.matmat(V), exact_ggn(model, F.cross_entropy, (_IDS, _Y)) @ V, rtol=1e-9, atol=1e-11)


def test_zoo_resnet_at_cifar_size_in_float32():
    from landscape.models import build

    model = build("resnetv2", depth=8, width=2).eval()  # 3×32×32 inputs, BatchNorm in eval
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([1, 7])
    op = HessianOperator(model, F.cross_entropy, (X, y))
    assert op.dtype == torch.float32 and op.info()["asymmetry"] < 1e-4
    V = torch.randn(op.dim, 3, generator=g)
    assert _rel(op.matmat(V), _torch_hvp(model, F.cross_entropy, X, y, V)) < 1e-5
    assert next(model.parameters()).dtype == torch.float32


def test_tied_weights_against_finite_differences():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(5, 4), nn.Linear(4, 5)
            self.dec.weight = nn.Parameter(torch.empty(5, 4))
            self.dec.weight = self.enc.weight  # decoder uses W, an autoencoder-style tie
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            h = torch.tanh(self.enc(x))
            return self.head(torch.tanh(F.linear(h, self.enc.weight.T, self.dec.bias)))

    torch.manual_seed(0)
    model = Tied().double().eval()
    X, y = tiny.data((5,), n=8)
    op = HessianOperator(model, F.cross_entropy, (X, y))
    assert op.dim == sum(p.numel() for p in model.parameters())
    H = exact_hessian(model, F.cross_entropy, (X, y))
    v = torch.randn(op.dim, dtype=D, generator=torch.Generator().manual_seed(3))
    fd = _fd_hvp(model, F.cross_entropy, X, y, v)
    assert _rel(op.matvec(v), fd) < 1e-7 and _rel(H @ v, fd) < 1e-7


def test_frozen_parameters_give_the_submatrix():
    model = tiny.mlp()
    X, y = tiny.data((5,), n=10)
    H_all = exact_hessian(model, tiny.loss, (X, y))
    model[2].weight.requires_grad_(False)
    try:
        op = HessianOperator(model, tiny.loss, (X, y))
        keep = torch.cat([torch.full((p.numel(),), p.requires_grad) for p in model.parameters()])
        assert op.dim == int(keep.sum()) and "2.weight" not in op.param_names
        V = torch.randn(op.dim, 2, dtype=D)
        torch.testing.assert_close(op.matmat(V), H_all[keep][:, keep] @ V, rtol=1e-9, atol=1e-10)
    finally:
        model[2].weight.requires_grad_(True)


def test_weight_norm_is_refused_naming_the_cause():
    torch.manual_seed(0)
    for wrap in (nn.utils.parametrizations.weight_norm, nn.utils.weight_norm):
        with warnings.catch_warnings():  # the old-style hook warns that it is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            model = nn.Sequential(wrap(nn.Linear(5, 6)), nn.Tanh(), nn.Linear(6, 3)).eval()
        X, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
        for check in (True, False):  # the symmetry check runs with or without the determinism check
            with pytest.raises(LandscapeError, match=r"not symmetric.*weight_norm on '0'.*double backward"):
                HessianOperator(model, F.cross_entropy, (X, y), backend="double_backward", check_deterministic=check)
            # "auto" turns to first-order finite differences (weight_norm's gradient is right) and says why
            op = HessianOperator(model, F.cross_entropy, (X, y), check_deterministic=check)
            assert op.backend == "finite_difference"
            assert re.search(r"not symmetric.*weight_norm on '0'", op.info()["rejected"]["double_backward"])


def test_symmetric_models_pass_the_check_in_float32():
    for name, (model, shape) in tiny.models().items():
        X, y = tiny.data(shape, n=8)
        op = HessianOperator(model.float(), tiny.loss, (X.float(), y))
        assert op.info()["asymmetry"] < 1e-5, name


def test_nan_weights_are_named_not_blamed_on_dropout():
    model = tiny.mlp()
    with torch.no_grad():
        model[0].weight[1, 2] = float("nan")
    X, y = tiny.data((5,))
    with pytest.raises(LandscapeError, match="not finite") as e:
        HessianOperator(model, tiny.loss, (X, y))
    assert "random" not in str(e.value)
