"""The batched grid against closed forms, a per-point loop, λ1 and a manual BatchNorm reset-and-forward."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, top_eigenpairs
from landscape.surface import eigen_directions, evaluate_grid, mesh_coords, parameters_of, random_directions
from tests.surface.models import D, Quadratic, classification, conv_bn, mean_output, mlp


def _loop(model, X, y, dirs, coords, batch=7):
    """The reference procedure: write θ(c) into a copy of the model, forward the data, repeat."""
    m = copy.deepcopy(model).eval()
    base = parameters_of(model)
    losses, accs = [], []
    with torch.no_grad():
        for c in coords:
            for name, p in m.named_parameters():
                p.copy_(base[name] + sum(float(cj) * d[name] for cj, d in zip(c, dirs)))
            tot = hit = 0.0
            for xb, yb in zip(X.split(batch), y.split(batch)):
                out = m(xb)
                tot += float(F.cross_entropy(out, yb)) * len(yb)
                hit += float((out.argmax(1) == yb).sum())
            losses.append(tot / len(y))
            accs.append(hit / len(y))
    return np.array(losses), np.array(accs)


def test_quadratic_surface_along_eigen_directions_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(6, 6, generator=g, dtype=D)
    A = B @ B.T - 2 * torch.eye(6, dtype=D)                     # indefinite, symmetric
    theta0 = torch.randn(6, generator=g, dtype=D)
    model = Quadratic(A, theta0)
    lam, V = torch.linalg.eigh(A)
    dirs = eigen_directions(model, V[:, [-1, 0]])
    xs = np.linspace(-1, 1, 5)
    ys = np.linspace(-2, 2, 7)
    vals = evaluate_grid(model, mean_output, (torch.zeros(3, 1, dtype=D), torch.zeros(3, dtype=D)), dirs,
                         mesh_coords(xs, ys))
    loss = vals.loss.reshape(len(ys), len(xs))
    X, Y = np.meshgrid(xs, ys)
    v1, v2, t0 = V[:, -1].numpy(), V[:, 0].numpy(), theta0.numpy()
    # ½(θ0 + a v1 + b v2)ᵀ A (θ0 + a v1 + b v2) with A v = λ v
    exact = (0.5 * t0 @ A.numpy() @ t0 + X * lam[-1].item() * (v1 @ t0) + Y * lam[0].item() * (v2 @ t0)
             + 0.5 * lam[-1].item() * X ** 2 + 0.5 * lam[0].item() * Y ** 2)
    np.testing.assert_allclose(loss, exact, rtol=1e-12, atol=1e-12)
    assert np.isnan(vals.accuracy).all()  # float targets: no accuracy


def test_second_difference_along_the_top_eigenvector_is_lambda1():
    model = mlp()
    X, y = classification()
    top = top_eigenpairs(HessianOperator(model, F.cross_entropy, (X, y)), k=1)
    (d,) = eigen_directions(model, top.eigenvectors, None)
    h = 1e-3
    L = evaluate_grid(model, F.cross_entropy, (X, y), [d], [-h, 0.0, h]).loss
    second = (L[0] - 2 * L[1] + L[2]) / h ** 2
    assert second == pytest.approx(float(top.eigenvalues[0]), rel=1e-5)


@pytest.mark.parametrize("backend", ["vmap", "loop"])
@pytest.mark.parametrize("make", [mlp, conv_bn], ids=["mlp", "conv_bn"])
def test_batched_grid_equals_a_per_point_loop(make, backend):
    model = make()
    X, y = classification(image=make is conv_bn)
    dirs = random_directions(model, 2, seed=1)
    coords = mesh_coords(np.linspace(-1, 1, 4), np.linspace(-0.5, 1, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, batch_size=9, points_per_pass=5,
                         backend=backend)
    ref_loss, ref_acc = _loop(model, X, y, dirs, coords)
    np.testing.assert_allclose(vals.loss, ref_loss, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(vals.accuracy, ref_acc, atol=1e-12)
    for k, v in model.state_dict().items():  # the model is untouched
        assert torch.equal(v, before[k]), k
    assert not model.training


@pytest.mark.parametrize("backend", ["vmap", "loop"])
def test_recomputed_bn_statistics_equal_a_manual_reset_and_forward(backend):
    model = conv_bn()
    X, y = classification(n=30, image=True)
    dirs = random_directions(model, 1, seed=2)
    coords = np.array([[-0.5], [0.0], [0.7]])
    vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, bn="recompute", batch_size=8,
                         backend=backend)
    eval_vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, batch_size=8, backend=backend)
    base = parameters_of(model)
    for (c,), got in zip(coords, vals.loss):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(base[name] + c * dirs[0][name])
            for bn in (m.bn, m.bn2):
                bn.reset_running_stats()
                bn.momentum = None
            m.train()
            for xb in X.split(8):
                m(xb)
            m.eval()
            want = float(F.cross_entropy(m(X), y))
        assert got == pytest.approx(want, rel=1e-10)
    assert not np.allclose(vals.loss, eval_vals.loss)  # the statistics matter here
    assert model.bn.momentum == 0.1 and model.bn.num_batches_tracked == 0


def test_resume_state_skips_done_points_and_bad_inputs():
    model = mlp()
    X, y = classification()
    dirs = random_directions(model, 2, seed=1)
    coords = mesh_coords(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3))
    states = []
    full = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, points_per_pass=4,
                         on_state=lambda s: states.append({k: v.copy() for k, v in s.items()}))
    assert [int(s["done"].sum()) for s in states] == [4, 8, 9]
    seen = []
    again = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, points_per_pass=4, state=states[0],
                          progress=seen.append)
    assert sum(seen) == 5
    np.testing.assert_array_equal(again.loss, full.loss)
    with pytest.raises(LandscapeError, match="coords must have shape"):
        evaluate_grid(model, F.cross_entropy, (X, y), dirs, np.zeros((3, 3)))
    with pytest.raises(LandscapeError, match="does not have 9 points"):
        evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, state={"loss": [1.0]})
    with pytest.raises(LandscapeError, match="bn must be"):
        evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords, bn="train")


def test_float32_zoo_model_at_realistic_width_agrees_with_the_loop():
    from landscape.models import build

    model = build("fc", kind="residual", depth=4, width=64).eval()
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 40, generator=g), torch.randint(0, 10, (64,), generator=g)
    dirs = random_directions(model, 2, seed=0)
    coords = mesh_coords(np.linspace(-0.2, 0.2, 3), np.linspace(-0.2, 0.2, 3))
    vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, coords)
    ref, _ = _loop(model, X, y, dirs, coords, batch=64)
    np.testing.assert_allclose(vals.loss, ref, rtol=2e-5)


def test_a_model_in_train_mode_keeps_its_buffers_and_mode():
    model = conv_bn().train()
    X, y = classification(n=12, image=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dirs = random_directions(model, 1, seed=0)
    for bn in ("eval", "recompute"):
        evaluate_grid(model, F.cross_entropy, (X, y), dirs, [[0.0], [0.5]], bn=bn)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and model.bn.training
