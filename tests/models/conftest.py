"""Shared checks for the model-zoo tests: float64 gradchecks and the every-parameter-gets-a-gradient test."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call


def _gradcheck_model(model: torch.nn.Module, x: torch.Tensor, params: bool = True) -> None:
    """float64 gradcheck of a random output projection: w.r.t. the input, and all parameters (fast mode)."""
    model = model.double()
    x = x.double().requires_grad_()
    weights = torch.randn(model(x).shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda inp: (model(inp) * weights).sum(), (x,))
    if not params:
        return
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()]).requires_grad_()

    def loss(v):
        chunks = v.split([s.numel() for s in shapes])
        return (
            functional_call(model, {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}, (x,)) * weights
        ).sum()

    assert torch.autograd.gradcheck(loss, (flat,), fast_mode=True)


def _every_param_gets_grad(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.fixture
def gradcheck_model():
    return _gradcheck_model


@pytest.fixture
def every_param_gets_grad():
    return _every_param_gets_grad
