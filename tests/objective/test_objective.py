"""landscape.objective: one data normalizer, the exact data-set mean, the model's own loss of HF tasks, and
one-line refusals of losses and data that would make every engine's number wrong."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.data import TensorData
from landscape.errors import LandscapeError
from landscape.objective import IGNORE, Batches, Objective, select_params

from . import hf

D = torch.float64


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)


def _data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=D), torch.randint(0, 3, (n,), generator=g)


def _mean(objective: Objective) -> float:
    """Σ w_b ℓ_b / Σ w_b over the objective's batches."""
    total = weight = 0.0
    with torch.no_grad():
        for b in objective.batches():
            w = objective.weight(b)
            total += w * float(objective.loss(b))
            weight += w
    return total / weight


def test_every_form_of_data_gives_the_same_data_set_mean():
    model, (X, y) = _mlp(), _data()
    expect = float(F.cross_entropy(model(X), y).detach())
    forms = {
        "pair": (X, y),
        "tensordata": TensorData(X, y, 3, {}, 0.0, 1.0),
        "list of pairs": [(X[:3], y[:3]), (X[3:], y[3:])],
        "iterator": iter([(X[:7], y[:7]), (X[7:], y[7:])]),
        "loader of tuples": DataLoader(TensorDataset(X, y), batch_size=4),
        "loader of dicts": [{"x": X[:5], "labels": y[:5]}, {"x": X[5:], "labels": y[5:]}],
    }
    for name, data in forms.items():
        objective = Objective(_Kw(model) if "dicts" in name else model, F.cross_entropy, data)
        assert _mean(objective) == pytest.approx(expect, rel=1e-12), name
    assert len(list(Batches((X, y), batch_size=3))) == 4


class _Kw(nn.Module):
    """A model taking a keyword input, as HF models do."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_token_weights_make_padded_batches_of_different_lengths_exact():
    """Per-token mean over valid tokens of two batches of different lengths = the mean over all valid tokens."""
    torch.manual_seed(0)
    emb = nn.Embedding(7, 5).to(D)
    batches, pooled_logits, pooled_y = [], [], []
    for b, t in ((2, 5), (3, 2)):
        ids = torch.randint(0, 7, (b, t))
        y = torch.randint(0, 5, (b, t))
        y[0, -1] = IGNORE
        batches.append((ids, y))
        pooled_logits.append(emb(ids).reshape(-1, 5))
        pooled_y.append(y.reshape(-1))
    expect = float(F.cross_entropy(torch.cat(pooled_logits), torch.cat(pooled_y)).detach())

    def token_ce(logits, y):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    objective = Objective(emb, token_ce, batches)
    assert [objective.weight(b) for b in objective.batches()] == [9, 5]
    assert _mean(objective) == pytest.approx(expect, rel=1e-12)
    assert Objective(emb, token_ce, batches, weighting="samples").weight(next(objective.batches())) == 2


def test_causal_lm_own_loss_equals_the_models_loss_with_shifted_labels():
    """Explicit labels (padding −100) give the model's own .loss; without labels, the objective scores the input
    ids with padding excluded (what a language-modeling collator makes), which is the same number."""
    model = hf.gpt2()
    for b in hf.token_batches():
        labels = b["input_ids"].clone()
        labels[b["attention_mask"] == 0] = IGNORE
        explicit = Objective(model, None, {**b, "labels": labels})
        implicit = Objective(model, None, b)
        with torch.no_grad():
            theirs = model(**b, labels=labels, use_cache=False).loss
            ours = explicit.loss(next(explicit.batches()))
            default = implicit.loss(next(implicit.batches()))
        # HF computes its loss in float32 whatever the model dtype (logits.float()); ours keeps float64
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0, check_dtype=False)
        assert float(default) == float(ours)
        assert explicit.task == "causal_lm"
        assert explicit.weight(next(explicit.batches())) == int((labels[:, 1:] != IGNORE).sum())


def test_data_set_mean_over_padded_token_batches_is_the_mean_over_all_tokens():
    """Two batches of different lengths: the objective's mean equals the token-mean cross-entropy over every
    valid shifted position of both, computed by hand from the logits."""
    model = hf.gpt2()
    batches = hf.token_batches()
    nll, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = model(**b, use_cache=False).logits[:, :-1]
            target = b["input_ids"][:, 1:]
            valid = b["attention_mask"][:, 1:] == 1
            lp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
            nll -= float(lp[valid].sum())
            count += int(valid.sum())
    assert _mean(Objective(model, None, batches)) == pytest.approx(nll / count, rel=1e-12)


@pytest.mark.parametrize("head,labels", [
    ("BertForMaskedLM", "tokens"), ("BertForTokenClassification", "tokens"),
    ("BertForSequenceClassification", "single"), ("BertForSequenceClassification", "regression"),
    ("BertForSequenceClassification", "multi"),
])
def test_bert_task_losses_equal_the_models_own(head, labels):
    extra = {"num_labels": 1} if labels == "regression" else {"num_labels": 3}
    model = hf.bert(head, **extra)
    b = hf.token_batches()[0]
    g = torch.Generator().manual_seed(1)
    B, T = b["input_ids"].shape
    if labels == "tokens":
        n = hf.VOCAB if head == "BertForMaskedLM" else 3
        y = torch.randint(0, n, (B, T), generator=g)
        y[:, ::2] = IGNORE
    elif labels == "single":
        y = torch.randint(0, 3, (B,), generator=g)
    elif labels == "regression":
        y = torch.randn(B, generator=g, dtype=D)
    else:
        y = torch.randint(0, 2, (B, 3), generator=g).to(D)
    objective = Objective(model, None, {**b, "labels": y})
    batch = next(objective.batches())
    with torch.no_grad():
        torch.testing.assert_close(objective.loss(batch), model(**b, labels=y).loss, rtol=1e-12, atol=0)
    assert objective.weight(batch) == (int((y != IGNORE).sum()) if labels == "tokens" else B)


def test_losses_that_would_scale_every_eigenvalue_are_refused_in_one_line():
    model, data = _mlp(), _data()
    cases = {
        "reduction='sum'": nn.CrossEntropyLoss(reduction="sum"),
        "pass an instance": nn.CrossEntropyLoss,
    }
    for match, loss in cases.items():
        with pytest.raises(LandscapeError, match=match) as e:
            Objective(model, loss, data)
        assert "\n" not in str(e.value)
    summed = Objective(model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), data)
    with pytest.raises(LandscapeError, match="sums over the batch"):
        summed.check(next(summed.batches()))
    meaned = Objective(model, F.cross_entropy, data)
    assert float(meaned.check(next(meaned.batches()))) == pytest.approx(_mean(meaned))


def test_labels_out_of_range_name_the_range():
    model, (X, y) = _mlp(), _data()
    y = y.clone()
    y[0] = 7
    objective = Objective(model, F.cross_entropy, (X, y))
    with pytest.raises(LandscapeError, match=r"labels out of range: they span \[0, 7\] but the model predicts 3"):
        objective.check(next(objective.batches()))


def test_a_float64_model_takes_float32_data():
    model, (X, y) = _mlp(), _data()
    objective = Objective(model, F.cross_entropy, (X.float(), y))
    batch = next(objective.batches(torch.device("cpu"), D))
    assert batch.args[0].dtype == D and batch.targets.dtype == torch.int64
    assert float(objective.loss(batch)) == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-6)


def test_select_params_takes_names_patterns_and_tensors_and_skips_frozen_ones():
    model = _mlp()
    model[0].bias.requires_grad_(False)
    assert select_params(model, None) == ["0.weight", "2.weight", "2.bias"]
    assert select_params(model, ["2.*"]) == ["2.weight", "2.bias"]
    assert select_params(model, [model[2].bias, "0.weight"]) == ["0.weight", "2.bias"]
    with pytest.raises(LandscapeError, match="matches no parameter"):
        select_params(model, ["3.*"])


def test_a_model_without_labels_and_no_loss_fn_is_told_to_pass_one():
    objective = Objective(_mlp(), None, _data())
    with pytest.raises(LandscapeError, match="pass loss_fn"):
        objective.check(next(objective.batches()))
