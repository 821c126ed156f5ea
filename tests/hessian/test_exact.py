"""exact_hessian / exact_ggn: an independent autograd oracle, batch weighting, the size limit."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.hessian import exact_ggn, exact_hessian

from . import tiny

MODELS = tiny.models()


def _flat_loss(model, X, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def f(theta):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            ps[n] = theta[i : i + k].view(s)
            i += k
        return tiny.loss(torch.func.functional_call(model, ps, (X,)), y)

    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


ALL = {**MODELS, "no_forward_ad": (tiny.NoForwardAD().double().eval(), (5,))}


@pytest.mark.parametrize("name", list(ALL))
def test_exact_hessian_matches_autograd_functional(name):
    """The oracle (vmap(jvp(grad)), or batched double backward) against torch.autograd.functional.hessian
    (reverse-over-reverse, row by row, no symmetrization): every tiny model."""
    model, shape = ALL[name]
    X, y = tiny.data(shape, n=6)
    f, flat = _flat_loss(model, X, y)
    ref = torch.autograd.functional.hessian(f, flat)
    assert float((ref - ref.T).abs().max()) <= 1e-12 * float(ref.abs().max())
    torch.testing.assert_close(exact_hessian(model, tiny.loss, (X, y)), ref, rtol=1e-10, atol=1e-12)


def test_random_models_are_refused():
    """Functional dropout (not a module, so check_fixed cannot see it) would give one mask's Hessian."""

    class Dropped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.nn.functional.dropout(torch.tanh(self.a(x)), 0.5, training=True))

    X, y = tiny.data((5,), n=6)
    for fn in (exact_hessian, exact_ggn):
        with pytest.raises(LandscapeError, match="random"):
            fn(Dropped().double(), tiny.loss, (X, y))


def test_asymmetric_second_derivatives_and_nan_weights_are_refused():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(5, 4)),
                                torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    X, y = tiny.data((5,), n=6)
    with pytest.raises(LandscapeError, match="not symmetric"):
        exact_hessian(model, tiny.loss, (X, y))
    bad = tiny.mlp()
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with pytest.raises(LandscapeError, match="not finite"):
        exact_hessian(bad, tiny.loss, (X, y))


def test_batches_weighted_by_size():
    model, shape = MODELS["attention"]
    X, y = tiny.data(shape, n=10)
    parts = [(X[:2], y[:2]), (X[2:], y[2:])]
    H = exact_hessian(model, tiny.loss, parts)
    H0, H1 = (exact_hessian(model, tiny.loss, p) for p in parts)
    torch.testing.assert_close(H, (2 * H0 + 8 * H1) / 10, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(H, exact_hessian(model, tiny.loss, (X, y)), rtol=1e-10, atol=1e-12)


def test_double_backward_path_when_forward_ad_is_missing():
    model = tiny.NoForwardAD(4, 3).double()
    X, y = tiny.data((4,), n=6)
    f, flat = _flat_loss(model, X, y)
    ref = torch.autograd.functional.hessian(f, flat)
    torch.testing.assert_close(exact_hessian(model, tiny.loss, (X, y), chunk_size=7), ref, rtol=1e-10, atol=1e-12)


def test_size_limit_refused():
    model, shape = MODELS["mlp"]
    X, y = tiny.data(shape)
    dim = sum(p.numel() for p in model.parameters())
    for fn in (exact_hessian, exact_ggn):
        with pytest.raises(LandscapeError, match="max_params"):
            fn(model, tiny.loss, (X, y), max_params=dim - 1)
    assert exact_hessian(model, tiny.loss, (X, y), max_params=dim).shape == (dim, dim)
