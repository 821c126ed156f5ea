"""compile=: the products through torch.compile equal the eager ones; backends that cannot be compiled, and a
compiler that fails, fall back to eager with the reason in info()."""

import pytest
import torch
import torch.nn.functional as F

from landscape.hessian import GGNOperator, HessianOperator
from landscape.hessian.operators import compiled

D = torch.float64


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(D)
    return model, torch.randn(24, 5, dtype=D), torch.randint(0, 3, (24,))


@pytest.mark.parametrize("cls, backend, traced", [(HessianOperator, "func", True), (GGNOperator, "func", False),
                                                  (GGNOperator, "double_backward", True)])
def test_traced_products_equal_eager_ones(cls, backend, traced):
    """aot_eager: dynamo and AOT autograd trace the product as inductor would, without generating code. torch
    2.13 traces forward-over-reverse and the double-backward GGN; the torch.func GGN fails inside vmap(vjp)
    and runs eager, saying why."""
    model, X, y = _problem()
    eager = cls(model, F.cross_entropy, (X, y), backend=backend)
    op = cls(model, F.cross_entropy, (X, y), backend=backend, compile="aot_eager")
    V = torch.randn(eager.dim, 3, dtype=D)
    torch.testing.assert_close(op.matmat(V), eager.matmat(V), rtol=1e-10, atol=1e-12)
    assert eager.info()["compile"] == "eager"
    said = op.info()["compile"]
    assert said == "compiled" if traced else (said == "compiled" or said.startswith("torch.compile failed ("))


def test_double_backward_hessian_stays_eager_and_says_why():
    model, X, y = _problem()
    op = HessianOperator(model, F.cross_entropy, (X, y), backend="double_backward", compile=True)
    assert "double-backward graph" in op.info()["compile"] and op.info()["compile"].endswith("eager")
    V = torch.randn(op.dim, 2, dtype=D)
    torch.testing.assert_close(op.matmat(V), HessianOperator(model, F.cross_entropy, (X, y)).matmat(V))


def test_a_failing_compiler_falls_back_to_eager_with_its_reason(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(compiled.torch, "compile", broken)
    model, X, y = _problem()
    op = HessianOperator(model, F.cross_entropy, (X, y), backend="func", compile=True)
    V = torch.randn(op.dim, 2, dtype=D)
    ref = HessianOperator(model, F.cross_entropy, (X, y), backend="func").matmat(V)
    torch.testing.assert_close(op.matmat(V), ref)
    assert op.info()["compile"] == "torch.compile failed (RuntimeError: no C++ compiler found); eager"
