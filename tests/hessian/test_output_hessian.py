"""The analytic, chunked cross-entropy output Hessian against torch.func.hessian of the loss, and the GGN of
tiny HF language models built on it against the brute-force `exact_ggn` and against the generic GGN path."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import hessian

from landscape.hessian import GGNOperator, exact_ggn
from landscape.hessian.operators import ggn as ggn_module
from landscape.hessian.operators import output_hessian as oh
from landscape.objective import IGNORE, Batch, Objective
from tests.objective import hf

D = torch.float64


def _dense_output_hessian(loss_of_output, logits):
    return hessian(loss_of_output)(logits).reshape(logits.numel(), logits.numel())


def _check_against_autograd(objective, logits, batch, budget=1 << 30):
    analytic = oh.cross_entropy_hessian(objective, logits, batch, budget)
    assert analytic is not None
    H = _dense_output_hessian(lambda o: objective.loss_of_output(o, batch), logits)
    U = torch.randn(3, *logits.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    expected = (U.reshape(3, -1) @ H).reshape(U.shape)
    torch.testing.assert_close(analytic.apply(U), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("budget", [1, 1 << 30])  # budget 1: one row per chunk
def test_causal_lm_output_hessian_equals_autograd(budget):
    model = hf.gpt2()
    objective = Objective(model, None, hf.token_batches())
    batch = objective.prepare(next(iter(objective.data)))
    assert (batch.targets == IGNORE).any()  # padded positions are not scored
    logits = torch.randn(*batch.targets.shape, hf.VOCAB, dtype=D)
    _check_against_autograd(objective, logits, batch, budget)


def test_masked_lm_output_hessian_equals_autograd():
    model = hf.bert("BertForMaskedLM")
    ids = torch.randint(1, hf.VOCAB, (3, 5), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, IGNORE)
    labels[:, 1] = ids[:, 1]
    labels[0, 3] = ids[0, 3]
    objective = Objective(model, None, [{"input_ids": ids, "labels": labels}])
    batch = objective.prepare(next(iter(objective.data)))
    _check_against_autograd(objective, torch.randn(3, 5, hf.VOCAB, dtype=D), batch)


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, torch.nn.CrossEntropyLoss(ignore_index=2),
                                     functools.partial(F.cross_entropy, label_smoothing=0.1)])
def test_user_cross_entropy_output_hessian_equals_autograd(loss_fn):
    y = torch.tensor([0, 2, 1, 2, 3, IGNORE])
    objective = Objective(torch.nn.Linear(2, 4), loss_fn, [(torch.zeros(6, 2), y)])
    batch = Batch((torch.zeros(6, 2),), {}, y if not isinstance(loss_fn, torch.nn.CrossEntropyLoss) else y.clamp(0))
    _check_against_autograd(objective, torch.randn(6, 4, dtype=D), batch)


@pytest.mark.parametrize("loss_fn", [F.mse_loss, torch.nn.CrossEntropyLoss(weight=torch.ones(4)),
                                     functools.partial(F.cross_entropy, weight=torch.ones(4))])
def test_other_losses_take_the_generic_path(loss_fn):
    y = torch.randn(6, 4) if loss_fn is F.mse_loss else torch.tensor([0, 2, 1, 2, 3, 1])
    objective = Objective(torch.nn.Linear(2, 4), loss_fn, [(torch.zeros(6, 2), y)])
    assert oh.cross_entropy_hessian(objective, torch.randn(6, 4), Batch((torch.zeros(6, 2),), {}, y), 1 << 30) is None


def test_chunk_rows_bounds_the_chunk_by_the_budget():
    assert oh.chunk_rows(16 * 50257 * 6 * 4 * 10, 50257, 4) == 10
    assert oh.chunk_rows(1, 50257, 4) == 1


def _generic(monkeypatch):
    monkeypatch.setattr(ggn_module, "cross_entropy_hessian", lambda *a: None)


@pytest.mark.parametrize("backend", ["func", "double_backward"])
def test_causal_lm_ggn_equals_exact_ggn_and_the_generic_path(backend, monkeypatch):
    model = hf.gpt2()
    batches = hf.token_batches()
    G = exact_ggn(model, None, batches)
    op = GGNOperator(model, None, batches, backend=backend, max_memory=1 << 14)  # a small budget: small chunks
    V = torch.randn(op.dim, 3, dtype=D, generator=torch.Generator().manual_seed(2))
    analytic = op.matmat(V)
    torch.testing.assert_close(analytic, G @ V, rtol=1e-8, atol=1e-10)
    _generic(monkeypatch)
    generic = GGNOperator(model, None, batches, backend=backend)
    torch.testing.assert_close(generic.matmat(V), analytic, rtol=1e-10, atol=1e-12)


def test_masked_lm_ggn_equals_exact_ggn():
    model = hf.bert("BertForMaskedLM")
    g = torch.Generator().manual_seed(3)
    batches = []
    for b, t in ((3, 5), (2, 4)):
        ids = torch.randint(1, hf.VOCAB, (b, t), generator=g)
        labels = torch.where(torch.rand(b, t, generator=g) < 0.5, ids, torch.full_like(ids, IGNORE))
        labels[0, 0] = ids[0, 0]
        batches.append({"input_ids": ids, "labels": labels})
    params = ["bert.encoder.layer.0.output.dense.*", "cls.*"]
    G = exact_ggn(model, None, batches, params=params)
    op = GGNOperator(model, None, batches, params=params, backend="double_backward")
    V = torch.randn(op.dim, 2, dtype=D, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(op.matmat(V), G @ V, rtol=1e-8, atol=1e-10)
