"""Finite-difference Hessian-vector products against exact float64 products, closed forms and refusals.

The references: exact float64 double-backward products (themselves checked against dense `exact_hessian` in
test_operator.py), the closed-form Hessian of a quadratic, and the closed-form truncation error of a cubic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian import GGNOperator, HessianOperator
from landscape.hessian.operators import finite_difference as fd

from . import tiny

transformers = pytest.importorskip("transformers")

F32_TOL = 1e-4


def _gpt2(seed: int = 0) -> nn.Module:
    """A 2-layer GPT-2 from a config (28,544 parameters), float32, default SDPA attention, eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _tokens(seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 64, (4, 16), generator=g)} for _ in range(2)]


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).eval()


def _mlp_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(64, 10, generator=g), torch.randint(0, 5, (64,), generator=g)
    return [(X[:32], y[:32]), (X[32:], y[32:])]


def _relative_errors(model, loss_fn, data, k=3):
    """(max relative error of float32 FD products vs exact float64 products, the FD operator)."""
    exact = HessianOperator(model.double(), loss_fn, data, backend="double_backward")
    V = torch.randn(exact.dim, k, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = exact.matmat(V)
    op = HessianOperator(model.float(), loss_fn, data, backend="finite_difference")
    out = op.matmat(V.float()).double()
    return float(((out - ref).norm(dim=0) / ref.norm(dim=0)).max()), op


@pytest.mark.parametrize("seed", [0, 1])
def test_gpt2_with_fused_sdpa_matches_exact_float64_products(seed):
    model = _gpt2(seed)
    assert model.config._attn_implementation == "sdpa"
    err, op = _relative_errors(model, None, _tokens(seed))
    assert op.info()["attention_kernel"] is None  # products ran through the fused kernel
    assert err <= F32_TOL
    info = op.info()["finite_difference"]
    assert err <= info["error_estimate"] <= fd.TOLERANCE  # the Richardson estimate bounds the error
    assert any(c.startswith("product error") for c in op.info()["checks"])


def test_fused_sdpa_has_no_double_backward():
    """Why the backend exists: torch's fused CPU attention kernel has a gradient but no second derivative."""
    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    (g,) = torch.autograd.grad(F.scaled_dot_product_attention(q, q, q, is_causal=True).square().sum(), q,
                               create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g.sum(), q)


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_matches_exact_float64_products(seed):
    err, op = _relative_errors(_mlp(seed), F.cross_entropy, _mlp_data(seed))
    assert err <= F32_TOL
    assert err <= op.info()["finite_difference"]["error_estimate"]


def test_float64_is_accurate_to_1e8():
    model, shape = tiny.models()["mlp"]
    X, y = tiny.data(shape)
    exact = HessianOperator(model, tiny.loss, (X, y), backend="double_backward")
    op = HessianOperator(model, tiny.loss, (X, y), backend="finite_difference")
    V = torch.randn(op.dim, 2, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), exact.matmat(V), rtol=1e-8, atol=1e-10)


def test_closed_forms_quadratic_cubic_quartic():
    """Central differences are exact for losses up to cubic (their gradients are at most quadratic); for
    L = Σθ⁴/24 (∇L = θ³/6, H = diag θ²/2) D(h) − Hv = h²v³/6 entrywise and D(2h) − D(h) = 3·that."""
    g = torch.Generator().manual_seed(0)
    n = 7
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = A + A.T
    theta, v = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    delta = 0.05
    h = delta / float(v.norm())

    d = fd.central_difference(lambda t: [A @ t[0]], [theta], [v], delta)[0]  # L = ½θᵀAθ
    torch.testing.assert_close(d, A @ v, rtol=1e-12, atol=1e-12)
    d = fd.central_difference(lambda t: [t[0].square() / 2], [theta], [v], delta)[0]  # L = Σθ³/6
    torch.testing.assert_close(d, theta * v, rtol=1e-12, atol=1e-12)

    def quartic(t):
        return [t[0] ** 3 / 6]

    d1 = fd.central_difference(quartic, [theta], [v], delta)[0]
    d2 = fd.central_difference(quartic, [theta], [v], 2 * delta)[0]
    truncation = h**2 * v**3 / 6
    torch.testing.assert_close(d1 - theta.square() / 2 * v, truncation, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(d2 - d1, 3 * truncation, rtol=1e-8, atol=1e-14)
    assert fd.richardson_error([d1], [d2]) == pytest.approx(float((3 * truncation).norm() / d1.norm()), rel=1e-8)


def test_step_starts_at_the_cube_root_of_eps():
    assert fd.initial_step(9.0, torch.float32) == pytest.approx(torch.finfo(torch.float32).eps ** (1 / 3) * 10)
    assert fd.initial_step(0.0, torch.float64) == pytest.approx(2.220446049250313e-16 ** (1 / 3))


def test_zero_vector_gives_zero_product():
    out = fd.central_difference(lambda t: [t[0] ** 2], [torch.ones(3)], [torch.zeros(3)], 0.1)
    assert torch.equal(out[0], torch.zeros(3))


def test_saturated_float32_loss_is_refused_in_one_line():
    model, data = _mlp(), _mlp_data()
    X = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    with pytest.raises(LandscapeError, match="too inaccurate") as e:
        HessianOperator(model, F.cross_entropy, data, backend="finite_difference")
    assert "\n" not in str(e.value)


class _SignedSquare(torch.autograd.Function):
    """x·|x| with a first derivative only: its double backward is silently wrong, and functorch refuses it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x.abs()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x.abs()


class _FirstOrderOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(torch.tanh(_SignedSquare.apply(self.a(x))))


def test_auto_prefers_exact_backends():
    op = HessianOperator(_mlp(), F.cross_entropy, _mlp_data())
    assert op.backend in ("double_backward", "func")
    assert "finite_difference" not in op.info()


def test_auto_falls_back_to_finite_differences_and_says_why():
    torch.manual_seed(0)
    model = _FirstOrderOnly().double().eval()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    op = HessianOperator(model, F.cross_entropy, (X, y))
    assert op.backend == "finite_difference"
    assert set(op.info()["rejected"]) == {"double_backward", "func"}
    # the reference: central differences of float64 gradients at a tiny step, by hand
    V = torch.randn(op.dim, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def grad_at(t):
        torch.nn.utils.vector_to_parameters(t, model.parameters())
        model.zero_grad()
        F.cross_entropy(model(X), y).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    h = 1e-5
    ref = (grad_at(theta + h * V[:, 0]) - grad_at(theta - h * V[:, 0])) / (2 * h)
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    torch.testing.assert_close(op.matvec(V[:, 0]), ref, rtol=1e-5, atol=1e-8)


def test_gradient_into_real_parameters_gives_the_same_products():
    """The sharded path: a gradient(θ) that writes θ into the model and reads `.grad` after `.backward()`."""
    model, data = _mlp(), _mlp_data()
    op = HessianOperator(model, F.cross_entropy, data, backend="finite_difference")
    params = list(model.parameters())
    theta = [p.detach().clone() for p in params]

    def gradient(point):
        with torch.no_grad():
            for p, t in zip(params, point):
                p.copy_(t)
        model.zero_grad()
        for X, y in data:  # the data-set mean: equal batches
            (F.cross_entropy(model(X), y) / len(data)).backward()
        return [p.grad.clone() for p in params]

    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    out = torch.cat([t.reshape(-1) for t in fd.central_difference(gradient, theta, v, op.info()["finite_difference"]
                                                                   ["step"])]).double()
    with torch.no_grad():
        for p, t in zip(params, theta):
            p.copy_(t)
    exact = HessianOperator(model.double(), F.cross_entropy, data, backend="double_backward")
    ref = exact.matvec(torch.cat([t.reshape(-1) for t in v]).double())
    assert float((out - ref).norm() / ref.norm()) <= F32_TOL


def test_light_plan_still_calibrates_and_gradient_works():
    model, data = _mlp(), _mlp_data()
    op = HessianOperator(model, F.cross_entropy, data, backend="finite_difference", check_deterministic=False,
                         check_symmetric=False)
    assert op.info()["finite_difference"]["step"] > 0
    X = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(op.gradient(), expected, rtol=1e-5, atol=1e-7)


def test_ggn_has_no_finite_difference_backend():
    with pytest.raises(LandscapeError, match="backend must be one of"):
        GGNOperator(_mlp(), F.cross_entropy, _mlp_data(), backend="finite_difference")
