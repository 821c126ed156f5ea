"""CurvatureMonitor: every metric against a dense float64 reference or a closed form, the optimizer
thresholds against the linearized iteration they come from, warm starts, and no side effects on training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian, top_eigenpairs
from landscape.hessian.monitor import (
    CurvatureMonitor,
    MonitorOptions,
    adam_preconditioner,
    sgd_threshold_factor,
)

from . import tiny

D = torch.float64


def _setup(seed: int = 0, n: int = 40):
    torch.manual_seed(seed)
    model = tiny.mlp()
    X = torch.randn(n, 5, dtype=D)
    y = torch.randint(0, 3, (n,))
    return model, X, y


def _values(records, metric):
    return [r["value"] for r in records if r["metric"] == metric]


def _train(model, opt, X, y, steps, callback=None):
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X[: 16]), y[: 16])
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step, model, (X[:16], y[:16]), loss.detach())


def test_lambda_max_top_k_and_gradient_share_match_dense_eigh_at_the_measured_step():
    model, X, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = CurvatureMonitor(F.cross_entropy, (X, y), optimizer=opt, every=3, options=MonitorOptions(k=3, tol=1e-9))
    _train(model, opt, X, y, 3, mon)          # measures at step 3, after the update
    H = exact_hessian(model, F.cross_entropy, (X, y)).numpy()
    ev, U = np.linalg.eigh(H)
    top = ev[::-1][:3]
    rec = mon.records
    assert {r["step"] for r in rec} == {3}
    assert _values(rec, "lambda_max")[0] == pytest.approx(top[0], rel=1e-8)
    assert _values(rec, "lambda_max_residual")[0] < 1e-8 * top[0]
    assert _values(rec, "top_eigenvalues") == pytest.approx(top, rel=1e-8)
    assert [r["index"] for r in rec if r["metric"] == "top_eigenvalues"] == [1, 2, 3]
    g = torch.autograd.grad(F.cross_entropy(model(X), y), list(model.parameters()))
    g = torch.cat([t.reshape(-1) for t in g]).numpy()
    share = np.sum((U[:, ::-1][:, :3].T @ g) ** 2) / (g @ g)
    assert _values(rec, "grad_top_fraction")[0] == pytest.approx(share, rel=1e-7)
    assert _values(rec, "eos_ratio")[0] == pytest.approx(top[0] * 0.1 / 3.8, rel=1e-8)


class Quadratic(nn.Module):
    """Output θ; with `quad_loss` the loss is ½(θ − θ*)ᵀ A (θ − θ*), whose Hessian is exactly A."""

    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x):
        return self.theta.expand(x.shape[0], -1)


def _quadratic(d=12, seed=3):
    gen = torch.Generator().manual_seed(seed)
    a = torch.tensor([9.0, 5.0, 4.0] + [0.5 / (i + 1) for i in range(d - 3)], dtype=D)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=D))
    A = Q @ torch.diag(a) @ Q.T
    target = torch.randn(d, dtype=D, generator=gen)

    def loss_fn(out, y):
        r = out - target
        return 0.5 * torch.einsum("bi,ij,bj->b", r, A, r).mean()

    theta = torch.randn(d, generator=gen, dtype=D)
    return a, Q, target, loss_fn, theta


@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [(0.0, 0.0, False, 0.0), (0.9, 0.0, False, 1e-2),
                                                           (0.9, 0.5, False, 0.0), (0.8, 0.0, True, 0.0)])
def test_eos_ratio_and_grad_share_have_their_closed_forms_on_a_quadratic(momentum, dampening, nesterov, wd):
    a, Q, target, loss_fn, theta = _quadratic()
    model = Quadratic(theta)
    lr = 0.07
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                          weight_decay=wd)
    X = torch.zeros(5, 1, dtype=D)
    rec = CurvatureMonitor(loss_fn, (X, torch.zeros(5)), optimizer=opt,
                           options=MonitorOptions(k=2, tol=1e-10)).measure(model, 0)
    factor = (1 + 2 * momentum) / (2 + 2 * momentum) if nesterov else (1 - dampening) / (2 + 2 * momentum)
    assert _values(rec, "eos_ratio")[0] == pytest.approx((9.0 + wd) * lr * factor, rel=1e-9)
    coef = a * (Q.T @ (theta - target))          # the gradient A(θ − θ*) in the eigenbasis
    assert _values(rec, "grad_top_fraction")[0] == pytest.approx(float(coef[:2] @ coef[:2] / (coef @ coef)), rel=1e-9)
    assert _values(rec, "top_eigenvalues") == pytest.approx([9.0, 5.0], rel=1e-10)


def _radius(M):
    return float(np.abs(np.linalg.eigvals(M)).max())


@pytest.mark.parametrize("momentum,dampening,nesterov", [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.3, False),
                                                         (0.8, 0.0, True)])
def test_sgd_threshold_is_where_the_linearized_iteration_turns_unstable(momentum, dampening, nesterov):
    group = {"momentum": momentum, "dampening": dampening, "nesterov": nesterov}
    lam = 3.0
    for scale, unstable in ((0.99, False), (1.01, True)):
        eta = scale / (lam * sgd_threshold_factor(group))       # eos_ratio = scale
        b, c = momentum, 1 - dampening
        # state (θ, buf) on f = ½λθ²: buf' = b·buf + c·λθ; θ' = θ − η·(λθ + b·buf') if nesterov else θ − η·buf'
        if nesterov:
            M = np.array([[1 - eta * lam * (1 + b * c), -eta * b * b], [c * lam, b]])
        else:
            M = np.array([[1 - eta * c * lam, -eta * b], [c * lam, b]])
        assert (_radius(M) > 1) == unstable


def test_adam_threshold_is_where_the_preconditioned_iteration_turns_unstable():
    b1, lam_p = 0.9, 2.5          # λ of P⁻¹H along one eigendirection
    for scale, unstable in ((0.99, False), (1.01, True)):
        eta = scale * (2 + 2 * b1) / ((1 - b1) * lam_p)
        # m' = b1·m + (1−b1)·λθ (in P-scaled coordinates), θ' = θ − η·m'
        M = np.array([[1 - eta * (1 - b1) * lam_p, -eta * b1], [(1 - b1) * lam_p, b1]])
        assert (_radius(M) > 1) == unstable


@pytest.mark.parametrize("opt_name,wd", [("adam", 0.0), ("adam", 0.05), ("adamw", 0.05), ("amsgrad", 0.0)])
def test_preconditioned_sharpness_matches_a_dense_generalized_eigenproblem(opt_name, wd):
    model, X, y = _setup(1)
    cls = torch.optim.AdamW if opt_name == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=0.01, weight_decay=wd, amsgrad=opt_name == "amsgrad")
    _train(model, opt, X, y, 4)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, X, y, 1)
    params = list(model.parameters())
    P = adam_preconditioner(opt, params)
    # P is what Adam divided by: θ_t − θ_{t−1} = −η·m_t / P_t (before decoupled decay) for every entry
    m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in params])
    old = torch.cat([b.reshape(-1) for b in before])
    new = torch.cat([p.detach().reshape(-1) for p in params])
    decay = (1 - 0.01 * wd) if opt_name == "adamw" else 1.0
    assert torch.allclose(new, old * decay - 0.01 * m / P, rtol=1e-10, atol=1e-13)
    rec = CurvatureMonitor(F.cross_entropy, (X, y), optimizer=opt, options=MonitorOptions(tol=1e-10)).measure(model, 5)
    H = exact_hessian(model, F.cross_entropy, (X, y)).numpy()
    coupled = wd if opt_name == "adam" else 0.0
    ref = scipy.linalg.eigh(H + coupled * np.eye(len(H)), np.diag(P.numpy()), eigvals_only=True)[-1]
    assert _values(rec, "preconditioned_lambda_max")[0] == pytest.approx(ref, rel=1e-8)
    assert _values(rec, "eos_ratio")[0] == pytest.approx(ref * 0.01 * 0.1 / 3.8, rel=1e-8)


def test_trace_and_negative_ratio_match_the_dense_spectrum():
    model, X, y = _setup(2)
    dim = sum(p.numel() for p in model.parameters())
    mon = CurvatureMonitor(F.cross_entropy, (X, y),
                           options=MonitorOptions(metrics=("trace", "negative_ratio"), trace_products=3 * dim,
                                                  slq_iters=dim, slq_vectors=24, eps=1e-3))
    rec = mon.measure(model.eval(), 0)
    ev = np.linalg.eigvalsh(exact_hessian(model, F.cross_entropy, (X, y)).numpy())
    # Hutch++ with a sketch as wide as the matrix captures it whole: exact up to rounding
    assert _values(rec, "trace")[0] == pytest.approx(ev.sum(), rel=1e-8, abs=1e-10)
    neg, err = _values(rec, "negative_ratio")[0], _values(rec, "negative_ratio_stderr")[0]
    exact = np.mean(ev < -1e-3 * ev.max())
    assert 0 < err < 0.1
    assert abs(neg - exact) < 4 * err + 1e-3


class Noisy(nn.Module):
    """Dropout and BatchNorm in train mode: anything the monitor touched would show in the trajectory."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_training_with_the_monitor_is_bit_identical_to_training_without(opt_name):
    def run(with_monitor):
        torch.manual_seed(7)
        model = Noisy().to(D)
        X, y = torch.randn(40, 5, dtype=D), torch.randint(0, 3, (40,))
        opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd"
               else torch.optim.Adam(model.parameters(), lr=0.01))
        mon = CurvatureMonitor(F.cross_entropy, (X, y), optimizer=opt, every=2,
                               options=MonitorOptions(k=2, trace_products=6, slq_iters=5, metrics=(
                                   "lambda_max", "grad_top_fraction", "eos_ratio", "preconditioned_lambda_max",
                                   "trace", "negative_ratio")))
        _train(model, opt, X, y, 6, mon if with_monitor else None)
        assert model.training and all(m.training for m in model.modules())
        return model, torch.get_rng_state(), mon

    m1, rng1, mon = run(True)
    m2, rng2, _ = run(False)
    assert len(mon.history) == 3 and mon.records
    assert torch.equal(rng1, rng2)
    for (n, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), n
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_warm_start_reaches_the_tolerance_in_fewer_products():
    model, X, y = _setup(4)
    mon = CurvatureMonitor(F.cross_entropy, (X, y),
                           options=MonitorOptions(k=2, tol=1e-8, metrics=("lambda_max", "top_eigenvalues"),
                                                  guard=False))
    mon.measure(model, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    rec = mon.measure(model, 1)
    warm = mon.history[-1]["products"]
    op = HessianOperator(model, F.cross_entropy, [(X, y)])
    cold = top_eigenpairs(op, 2, tol=1e-8, max_matmats=100, seed=1)
    assert cold.converged and mon.history[-1]["converged"]
    assert _values(rec, "lambda_max")[0] == pytest.approx(cold.eigenvalues[0], rel=1e-9)
    assert warm <= 0.75 * cold.n_products   # residual 1e-3 → 1e-8 instead of 1 → 1e-8


def test_bad_options_are_one_line_errors():
    model, X, y = _setup()
    with pytest.raises(LandscapeError, match="unknown curvature metrics"):
        CurvatureMonitor(F.cross_entropy, (X, y), options=MonitorOptions(metrics=("lambda_min",)))
    with pytest.raises(LandscapeError, match="every"):
        CurvatureMonitor(F.cross_entropy, (X, y), every=0)
    with pytest.raises(LandscapeError, match="slq_vectors must be an integer ≥ 1"):
        MonitorOptions(slq_vectors=0)
    with pytest.raises(LandscapeError, match="tol and eps"):
        MonitorOptions(tol=0.0)
    with pytest.raises(LandscapeError, match="options must be a MonitorOptions"):
        CurvatureMonitor(F.cross_entropy, (X, y), options={"k": 2})
    assert MonitorOptions(metrics="lambda_max").metrics == ("lambda_max",)   # one name is one metric
    other = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(LandscapeError, match="not in the optimizer"):
        CurvatureMonitor(F.cross_entropy, (X, y), optimizer=other).measure(model, 0)


def test_probe_set_in_batches_gives_the_same_matrix():
    model, X, y = _setup(5)
    whole = CurvatureMonitor(F.cross_entropy, (X, y), options=MonitorOptions(k=2, tol=1e-10)).measure(model, 0)
    parts = CurvatureMonitor(F.cross_entropy, (X, y),
                             options=MonitorOptions(k=2, tol=1e-10, batch_size=7)).measure(model, 0)
    for metric in ("lambda_max", "top_eigenvalues", "grad_top_fraction"):
        assert _values(parts, metric) == pytest.approx(_values(whole, metric), rel=1e-9)


def test_the_gradient_guard_finds_a_new_top_eigenvalue_that_the_old_vector_cannot_see():
    a, Q, target, loss_fn, theta = _quadratic()
    model = Quadratic(theta)
    X = torch.zeros(5, 1, dtype=D)
    for guard, expect in ((False, 5.0), (True, 9.0)):
        mon = CurvatureMonitor(loss_fn, (X, torch.zeros(5)),
                               options=MonitorOptions(k=1, tol=1e-10, metrics="lambda_max", guard=guard))
        mon._vectors = Q[:, 1:2].clone()    # as if the last measurement's top vector is now the 2nd eigenvector
        rec = mon.measure(model, 1)
        assert _values(rec, "lambda_max")[0] == pytest.approx(expect, rel=1e-9)


def test_default_attention_models_are_measured_like_the_exact_hessian():
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.layer(x).mean(1))

    model = Encoder().to(D)
    X, y = torch.randn(6, 5, 4, dtype=D), torch.randint(0, 3, (6,))
    rec = CurvatureMonitor(F.cross_entropy, (X, y),
                           options=MonitorOptions(k=2, tol=1e-9, metrics=("lambda_max", "top_eigenvalues")),
                           ).measure(model.train(), 0)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):   # the reference needs the math kernel too
        H = exact_hessian(model.eval(), F.cross_entropy, (X, y)).numpy()
    assert _values(rec, "top_eigenvalues") == pytest.approx(np.linalg.eigvalsh(H)[::-1][:2], rel=1e-7)


def test_lambda_max_records_equal_the_hessian_cli_on_the_checkpoints_of_those_steps(tmp_path, monkeypatch):
    """`landscape.train --probes curvature`: λmax at the last step of epochs 1 and 2 equals the hessian CLI on
    the kept checkpoints of those epochs, on the same first 100 samples, to 1e-3 (both CLIs run in-process)."""
    import json

    from landscape.hessian.cli.main import main as hessian_main
    from landscape.io import read_jsonl
    from landscape.train.cli import main as train_main

    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    run = tmp_path / "run"
    try:
        assert train_main(["--model", "fc", "--model-config", '{"kind": "residual", "depth": 2, "width": 16}',
                           "--n-samples", "200", "--batch-size", "50", "--epochs", "2", "--optimizer", "sgd",
                           "--lr", "0.1", "--device", "cpu", "--no-progress", "--probes", "curvature",
                           "--probe-every", "4", "--measure-samples", "200", "--keep-epochs", "--out", str(run)]) == 0
        records = read_jsonl(run / "probes.jsonl")
        lam = {r["step"]: r["value"] for r in records if r["metric"] == "lambda_max"}
        assert sorted(lam) == [4, 8] and {r["epoch"] for r in records} == {1.0, 2.0}
        for metric in ("trace", "trace_stderr", "negative_ratio", "negative_ratio_stderr"):   # 1st of every 10
            assert [r["step"] for r in records if r["metric"] == metric] == [4]
        assert {"top_eigenvalues", "grad_top_fraction", "lambda_max_residual"} <= {r["metric"] for r in records}
        eos = {r["step"]: r["value"] for r in records if r["metric"] == "eos_ratio"}
        assert eos[8] == pytest.approx(lam[8] * 0.1 / (2 + 2 * 0.9))       # SGD with the CLI's momentum 0.9
        for epoch, step in ((1, 4), (2, 8)):
            out = tmp_path / f"hessian{epoch}"
            assert hessian_main([str(run / "epochs" / f"epoch_{epoch:04d}.pt"), "--n-samples", "200",
                                 "--top-k", "1", "--iters", "10", "--vectors", "1", "--device", "cpu",
                                 "--no-progress", "--out", str(out)]) == 0
            spectrum = json.loads((out / "spectrum.json").read_text())
            assert lam[step] == pytest.approx(spectrum["top_eigenvalues"][0], rel=1e-3)
    finally:
        torch.set_num_threads(threads)


def test_a_diverged_model_gets_nan_records_not_an_exception():
    model, X, y = _setup()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    rec = CurvatureMonitor(F.cross_entropy, (X, y)).measure(model, 3)
    assert [r["metric"] for r in rec] == ["lambda_max", "grad_top_fraction"]
    assert all(np.isnan(r["value"]) for r in rec)
