"""Every engine reads the one Objective: an HF causal LM from a config, given as a DataLoader of dict batches
(padded, of different lengths) with its own loss (loss_fn=None), against references written here by hand
(shifted cross-entropy over the valid tokens from the logits, float64, dense Hessians by torch.func)."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian
from torch.utils.data import DataLoader

from landscape.hessian import CurvatureMonitor, GGNOperator, HessianOperator, MonitorOptions, exact_ggn
from landscape.objective import IGNORE, math_attention
from landscape.probes import run_probes
from landscape.surface import evaluate_grid

from . import hf

D = torch.float64
LN_F = ["transformer.ln_f.weight", "transformer.ln_f.bias"]
BATCHES = hf.token_batches()


def _loader():
    """A DataLoader yielding the two padded dict batches (batch_size=None: the dicts as they are)."""
    return DataLoader(BATCHES, batch_size=None)


def _hand_loss(model, state=None):
    """Σ over both batches of the summed token NLL / the count of valid shifted tokens, from the logits."""
    nll, count = 0.0, 0
    for b in BATCHES:
        out = model(**b) if state is None else functional_call(model, state, (), b)
        logits = out.logits[:, :-1]
        target = b["input_ids"][:, 1:].clone()
        target[b["attention_mask"][:, 1:] == 0] = IGNORE
        nll = nll + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE,
                                    reduction="sum")
        count += int((target != IGNORE).sum())
    return nll / count


def _dense_hessian(model, names):
    params = dict(model.named_parameters())
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])
    shapes = [params[n].shape for n in names]

    def f(t):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = t[i:i + s.numel()].reshape(s)
            i += s.numel()
        return _hand_loss(model, parts)

    with math_attention():  # the fused CPU attention kernel has no forward-mode derivative
        return hessian(f)(theta)


def test_hessian_operator_takes_an_hf_model_and_a_loader_of_dicts():
    model = hf.gpt2()
    op = HessianOperator(model, None, _loader(), params=LN_F)
    H = _dense_hessian(model, LN_F)
    V = torch.randn(op.dim, 3, dtype=D)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-9, atol=1e-11)
    valid = sum(int(b["attention_mask"][:, 1:].sum()) for b in BATCHES)   # scored (shifted, unpadded) tokens
    assert op.info()["weights"] == "tokens" and op.n_samples == valid == 17


def test_ggn_of_the_models_own_loss_equals_the_brute_force_ggn():
    model = hf.gpt2()
    op = GGNOperator(model, None, _loader(), params=LN_F)
    G = exact_ggn(model, None, BATCHES, params=LN_F)
    V = torch.randn(op.dim, 2, dtype=D)
    torch.testing.assert_close(op.matmat(V), G @ V, rtol=1e-9, atol=1e-11)
    assert torch.linalg.eigvalsh(G).min() > -1e-10   # cross-entropy is convex in the logits: G ⪰ 0


def test_tied_embeddings_are_differentiated_once_through_both_uses():
    """GPT-2's input and output embeddings are one tensor: H v over it matches central differences of the
    gradient with the shared weight moved in place (so both uses move), an autograd-only reference."""
    model = hf.gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    op = HessianOperator(model, None, _loader(), params=["transformer.wte.weight"])
    W = model.transformer.wte.weight
    v = torch.randn(W.numel(), dtype=D)
    h = 1e-6  # central differences converge as h²: 3e-5 at 1e-4, 3e-9 at 1e-6 here

    def grad_at(shift):
        with torch.no_grad():
            W.add_(shift)
        try:  # first derivatives through the default (fused) attention kernel
            return torch.autograd.grad(_hand_loss(model), W)[0].reshape(-1)
        finally:
            with torch.no_grad():
                W.sub_(shift)

    step = (h * v).reshape(W.shape)
    fd = (grad_at(step) - grad_at(-step)) / (2 * h)
    torch.testing.assert_close(op.matvec(v), fd, rtol=1e-6, atol=1e-8)


def test_evaluate_grid_on_a_loader_of_dicts_equals_the_hand_loss_at_each_point():
    model = hf.gpt2()
    d = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    vals = evaluate_grid(model, None, _loader(), [d], [-0.1, 0.0, 0.2])
    for c, got in zip([-0.1, 0.0, 0.2], vals.loss):
        state = {n: p.detach() + c * d[n] for n, p in model.named_parameters()}
        with torch.no_grad():
            assert got == pytest.approx(float(_hand_loss(model, state)), rel=1e-10)
    assert 0 <= vals.accuracy.min() <= vals.accuracy.max() <= 1


def test_run_probes_on_a_loader_of_dicts_equals_the_tensor_path():
    from landscape.models import build

    torch.manual_seed(0)
    net = build("fc", kind="residual", depth=3, width=8, in_dim=4, n_classes=3).to(D).eval()

    class Keyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    X, y = torch.randn(12, 4, dtype=D), torch.randint(0, 3, (12,))
    dicts = DataLoader([{"x": X[:5], "labels": y[:5]}, {"x": X[5:], "labels": y[5:]}], batch_size=None)
    wrapped = Keyword()
    ours = run_probes(wrapped, F.cross_entropy, dicts, metrics=("grad_norm", "stream"))
    ref = run_probes(wrapped, F.cross_entropy, (X, y), metrics=("grad_norm", "stream"))
    key = lambda r: (r["block"], r["metric"])  # noqa: E731
    assert len(ours) == len(ref) > 0
    for a, b in zip(sorted(ours, key=key), sorted(ref, key=key)):
        assert key(a) == key(b) and a["value"] == pytest.approx(b["value"], rel=1e-10)


def test_monitor_on_a_loader_of_dicts_tracks_the_top_eigenvalue_of_the_trainable_block():
    """Only ln_f trains (the rest frozen): the monitor's λmax is the top eigenvalue of that block's Hessian."""
    model = hf.gpt2()
    for n, p in model.named_parameters():
        p.requires_grad_(n in LN_F)
    mon = CurvatureMonitor(None, _loader(),
                           options=MonitorOptions(k=2, tol=1e-9, max_matmats=200, metrics=("lambda_max",)))
    rec = mon.measure(model, 0)
    top = float(torch.linalg.eigvalsh(_dense_hessian(model, LN_F))[-1])
    lam = next(r["value"] for r in rec if r["metric"] == "lambda_max")
    assert lam == pytest.approx(top, rel=1e-8)
    assert all(p.grad is None for p in model.parameters())


def test_a_float64_model_takes_float32_data_in_every_engine():
    """Before the objective, run_probes and evaluate_grid failed with torch's raw dtype error here."""
    from landscape.models import build

    torch.manual_seed(0)
    net = build("fc", kind="residual", depth=3, width=8, in_dim=4, n_classes=3).to(D).eval()
    X, y = torch.randn(12, 4), torch.randint(0, 3, (12,))          # float32 data
    ref = float(F.cross_entropy(net(X.double()), y).detach())
    vals = evaluate_grid(net, F.cross_entropy, (X, y), [{n: torch.zeros_like(p) for n, p in net.named_parameters()}],
                         [0.0])
    assert vals.loss[0] == pytest.approx(ref, rel=1e-12)
    assert run_probes(net, F.cross_entropy, (X, y), metrics=("grad_norm",))
    op = HessianOperator(net, F.cross_entropy, (X, y))
    assert op.dtype == D and torch.isfinite(op.matvec(torch.ones(op.dim, dtype=D))).all()
