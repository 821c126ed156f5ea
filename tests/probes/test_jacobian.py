"""Jacobian extremes (docs/methods.md §C.1 bounds) equal jacrev + SVD on tiny blocks, bound the measured gradient
ratio, and leave the block's state (BatchNorm running statistics, RNG) unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev

from landscape.probes import block_jacobian_extremes, jacobian_extremes, probe, records_to_table

from .lookalikes import BasicBlock, FCBlock, FCNet


def exact(fn, x):
    J = jacrev(fn)(x).reshape(fn(x).numel(), x.numel())
    return torch.linalg.svdvals(J)


def test_matches_jacrev_svd_on_a_residual_fc_block():
    torch.manual_seed(0)
    block = FCBlock(5)
    x = torch.randn(3, 5)
    s = exact(block, x)
    smax, smin = block_jacobian_extremes(block, x, steps=15)
    assert smax == pytest.approx(s[0].item(), rel=1e-10)
    assert smin == pytest.approx(s[-1].item(), rel=1e-8)


def test_matches_on_a_train_mode_conv_block_and_keeps_its_buffers():
    torch.manual_seed(1)
    block = BasicBlock(2, 2).train()
    x = torch.randn(2, 2, 3, 3)
    state = copy.deepcopy(block.state_dict())
    rng = torch.get_rng_state()
    s = exact(lambda t: copy.deepcopy(block)(t.clone()), x)
    smax, smin = block_jacobian_extremes(block, x, steps=x.numel())
    assert smax == pytest.approx(s[0].item(), rel=1e-8)
    assert smin == pytest.approx(s[-1].item(), rel=1e-6, abs=1e-8)
    for k, v in block.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_widening_map_has_zero_lower_bound_and_few_steps_bracket_inward():
    torch.manual_seed(2)
    lin = nn.Linear(3, 5)
    x = torch.randn(2, 3)
    smax, smin = jacobian_extremes(lin, x, steps=10)
    assert smax == pytest.approx(torch.linalg.matrix_norm(lin.weight, 2).item(), rel=1e-10)
    assert smin == pytest.approx(0.0, abs=1e-6)
    sq = nn.Linear(40, 40)
    y = torch.randn(4, 40)
    s = torch.linalg.svdvals(sq.weight)
    few_max, few_min = jacobian_extremes(sq, y, steps=6)
    assert few_max <= s[0].item() * (1 + 1e-12) and few_min >= s[-1].item() * (1 - 1e-12)


def test_probe_bounds_the_measured_ratio():
    torch.manual_seed(3)
    model = FCNet(depth=4, mode="ortho").eval()
    X, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    with probe(model, metrics=("grad_norm", "jacobian"), jacobian_steps=40) as p:
        F.cross_entropy(model(X), y).backward()
    blocks, metrics, table = records_to_table(p.records)
    col = dict(zip(metrics, table.T))
    assert blocks == [f"blocks.{i}" for i in range(4)]
    assert (col["grad_ratio"] <= col["jac_sigma_max"] * (1 + 1e-9)).all()
    assert (col["grad_ratio"] >= col["jac_sigma_min"] * (1 - 1e-9)).all()
    # the probe evaluated each block on the input it actually received
    x = F.relu(model.inp(X))
    for i, b in enumerate(model.blocks):
        s = exact(b, x.detach())
        assert col["jac_sigma_max"][i] == pytest.approx(s[0].item(), rel=1e-9)
        x = b(x)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_default_attention_block_runs_through_the_math_kernel():
    """nn.TransformerEncoderLayer with PyTorch's default (fused, no double backward) attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(4)
    block = nn.TransformerEncoderLayer(6, 2, dim_feedforward=8, batch_first=True).eval()
    x = torch.randn(2, 3, 6)
    with sdpa_kernel(SDPBackend.MATH):
        s = exact(block, x)
    smax, smin = block_jacobian_extremes(block, x, steps=x.numel())
    assert smax == pytest.approx(s[0].item(), rel=1e-4)
    assert smin == pytest.approx(s[-1].item(), rel=1e-3, abs=1e-5)
