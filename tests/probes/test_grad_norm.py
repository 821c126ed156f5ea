"""grad_norm probes equal retain_grad on a hook-free manual forward (docs/methods.md §C.4), on landscape-style and
torchvision-style blocks; norms combine like clip_grad; data-set norms do not depend on the batching."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.probes import combined_norm, probe, records_to_table, run_probes

from .lookalikes import FCNet, TinyResNet, TokenNet


def manual_norms(stem, blocks, head, X, y):
    """‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖ per block via retain_grad on a manual forward."""
    x = stem(X)
    ins, outs = [], []
    for b in blocks:
        x.retain_grad()
        ins.append(x)
        x = b(x)
        outs.append(x)
    x.retain_grad()
    F.cross_entropy(head(x), y).backward()
    return torch.tensor([[i.grad.norm(), o.grad.norm()] for i, o in zip(ins, outs)])


def probe_norms(model, X, y, **kw):
    with probe(model, metrics="grad_norm", **kw) as p:
        F.cross_entropy(model(X), y).backward()
    blocks, metrics, table = records_to_table(p.records)
    return blocks, dict(zip(metrics, table.T))


@pytest.mark.parametrize("mode", ["identity", "ortho", "none"])
def test_fc_matches_retain_grad(mode):
    torch.manual_seed(0)
    model = FCNet(depth=5, mode=mode)
    X, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    ref = copy.deepcopy(model)
    expect = manual_norms(lambda X: F.relu(ref.inp(X)), ref.blocks, ref.out, X, y)
    blocks, got = probe_norms(model, X, y)
    assert blocks == [f"blocks.{i}" for i in range(5)]
    torch.testing.assert_close(torch.tensor(got["grad_norm_in"]), expect[:, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(got["grad_norm_out"]), expect[:, 1], rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(got["grad_ratio"]), expect[:, 0] / expect[:, 1], rtol=1e-12, atol=0)


def test_torchvision_style_resnet_matches_retain_grad():
    torch.manual_seed(1)
    model = TinyResNet()
    X, y = torch.randn(4, 2, 6, 6), torch.randint(0, 3, (4,))
    ref = copy.deepcopy(model)
    stem = lambda X: ref.relu(ref.bn1(ref.conv1(X)))  # noqa: E731
    expect = manual_norms(stem, [*ref.layer1, *ref.layer2], lambda x: ref.fc(x.mean((2, 3))), X, y)
    blocks, got = probe_norms(model, X, y)
    assert blocks == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    torch.testing.assert_close(torch.tensor(got["grad_norm_in"]), expect[:, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(got["grad_norm_out"]), expect[:, 1], rtol=1e-12, atol=0)


def test_token_blocks_and_glob_selection():
    torch.manual_seed(2)
    model = TokenNet(depth=3)
    X, y = torch.randn(3, 5, 4), torch.randint(0, 3, (3,))
    ref = copy.deepcopy(model)
    expect = manual_norms(ref.embed, ref.blocks, lambda x: ref.head(x.mean(1)), X, y)
    blocks, got = probe_norms(model, X, y, blocks="blocks.*")
    assert blocks == ["blocks.0", "blocks.1", "blocks.2"]
    torch.testing.assert_close(torch.tensor(got["grad_norm_out"]), expect[:, 1], rtol=1e-12, atol=0)


class TwoOut(nn.Module):
    """A block returning two tensors: the probe combines their gradient norms as clip_grad does."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x), self.b(x)


class TwoOutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.block = TwoOut()

    def forward(self, x):
        u, v = self.block(torch.tanh(self.pre(x)))
        return u[:, :3] * v


def test_several_outputs_combine_like_clip_grad():
    torch.manual_seed(3)
    model = TwoOutNet()
    X, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    h = torch.tanh(model.pre(X))
    h.retain_grad()
    u, v = model.block(h)
    u.retain_grad()
    v.retain_grad()
    F.cross_entropy(u[:, :3] * v, y).backward()
    expect_out = torch.sqrt(u.grad.norm() ** 2 + v.grad.norm() ** 2)
    model.zero_grad()
    _, got = probe_norms(model, X, y, blocks=["block"])
    assert got["grad_norm_out"][0] == pytest.approx(expect_out.item(), rel=1e-12)
    assert got["grad_norm_in"][0] == pytest.approx(h.grad.norm().item(), rel=1e-12)
    assert combined_norm([u.grad, v.grad]).item() == pytest.approx(expect_out.item(), rel=1e-12)
    flat = torch.cat([u.grad.flatten(), v.grad.flatten().float().double()])
    assert combined_norm([u.grad, v.grad.float()]).item() == pytest.approx(flat.norm().item(), rel=1e-6)


def test_two_backward_passes_add_as_one_batch():
    torch.manual_seed(4)
    model = FCNet(depth=3)
    X, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with probe(model, metrics="grad_norm") as p:
        for s in (slice(0, 3), slice(3, 8)):
            F.cross_entropy(model(X[s]), y[s], reduction="sum").backward()
    _, got = probe_norms(copy.deepcopy(model), X, y)
    two = {(r["block"], r["metric"]): r["value"] for r in p.records}
    # one pass with the mean loss: norms scale by 1/8 against the summed losses
    for i, v in enumerate(got["grad_norm_in"]):
        assert two[(f"blocks.{i}", "grad_norm_in")] / 8 == pytest.approx(v, rel=1e-12)


def test_a_probe_left_attached_holds_no_state_per_step():
    """Many forward/backward passes (and forwards without a backward) inside one probe: the norms add
    as one batch, and after each flush no gradient slot or hook of a finished pass is left behind."""
    torch.manual_seed(6)
    model = FCNet(depth=3)
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    with probe(model, metrics="grad_norm") as p:
        for s in range(0, 40, 4):
            F.cross_entropy(model(X[s:s + 4]), y[s:s + 4], reduction="sum").backward()
            model(X[s:s + 4])                                  # grad-enabled forward, no backward
            p.flush()
            assert not p._grad._got
            assert len(p._grad._handles) <= 4                  # only the last, unfinished pass's hooks
        many = {(r["block"], r["metric"]): r["value"] for r in p.records}
    _, one = probe_norms(copy.deepcopy(model), X, y)
    for i, v in enumerate(one["grad_norm_in"]):
        assert many[(f"blocks.{i}", "grad_norm_in")] / 40 == pytest.approx(v, rel=1e-12)


def test_run_probes_is_batch_size_invariant_and_creates_no_grad():
    torch.manual_seed(5)
    model = FCNet(depth=3)
    X, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    full = run_probes(model, F.cross_entropy, (X, y), metrics=("grad_norm",))
    parts = run_probes(model, F.cross_entropy, (X, y), metrics=("grad_norm",), batch_size=3)
    assert all(p.grad is None for p in model.parameters())
    assert [r["block"] for r in full] == [r["block"] for r in parts]
    for a, b in zip(full, parts):
        assert a["value"] == pytest.approx(b["value"], rel=1e-10)
    _, got = probe_norms(copy.deepcopy(model), X, y)
    assert [r["value"] for r in full if r["metric"] == "grad_ratio"] == pytest.approx(list(got["grad_ratio"]),
                                                                                       rel=1e-12)


def test_no_backward_gives_no_grad_records():
    model = FCNet(depth=2)
    with probe(model, metrics="grad_norm") as p:
        model(torch.randn(2, 6))
    assert p.records == []
