"""Mode connectivity: barriers against exact values, the Bézier curve through the midpoint is the line,
training the control point lowers the loss along the curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.surface import barrier_height, bezier_path, linear_path, parameters_of, train_bezier
from tests.surface.models import classification, mlp


def _trained(model, X, y, steps=100):
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval()


def _permuted(w):
    """The same function with the first hidden layer's units reversed: equal loss, a different point."""
    w = dict(w)
    w["0.weight"], w["0.bias"], w["2.weight"] = w["0.weight"].flip(0), w["0.bias"].flip(0), w["2.weight"].flip(1)
    return w


def test_barrier_between_identical_endpoints_is_zero():
    model = mlp()
    X, y = classification()
    a = parameters_of(model)
    path = linear_path(model, F.cross_entropy, (X, y), a, a, n=5)
    assert path.barrier == 0.0 and path.barrier_max == 0.0
    np.testing.assert_allclose(path.loss, path.loss[0], rtol=0, atol=0)


def test_barrier_height_closed_forms():
    t = np.linspace(0, 1, 11)
    assert barrier_height(t, 1 + 2 * t) == pytest.approx(0.0, abs=1e-15)            # linear: no barrier
    assert barrier_height(t, 1 + 4 * t * (1 - t)) == pytest.approx(1.0)              # bump of height 1 at t=½
    assert barrier_height(t, (t - 0.5) ** 2) == pytest.approx(0.0, abs=1e-15)       # convex
    with pytest.raises(LandscapeError, match="increase from 0 to 1"):
        barrier_height(t[::-1], t)


def test_bezier_through_the_midpoint_is_the_line_and_training_lowers_the_curve():
    X, y = classification(n=60)
    model = _trained(mlp(), X, y)
    a = parameters_of(model)
    b = _permuted(a)
    mid = {k: (a[k] + b[k]) / 2 for k in a}
    line = linear_path(model, F.cross_entropy, (X, y), a, b, n=9)
    curve = bezier_path(model, F.cross_entropy, (X, y), a, mid, b, n=9)
    np.testing.assert_allclose(curve.loss, line.loss, rtol=1e-12)
    assert line.barrier > 0.05  # a minimum and its permuted copy: the straight line rises
    c = train_bezier(model, F.cross_entropy, (X, y), a, b, steps=20, lr=0.05, batch_size=60, seed=0)
    trained = bezier_path(model, F.cross_entropy, (X, y), a, c, b, n=9)
    assert trained.loss.mean() < curve.loss.mean()
    assert trained.barrier < line.barrier
    np.testing.assert_allclose(trained.loss[[0, -1]], line.loss[[0, -1]], rtol=1e-12)  # endpoints fixed
    assert set(trained.to_dict()) >= {"t", "loss", "barrier", "barrier_max", "kind"}
