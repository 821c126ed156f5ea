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


class _BNNet(torch.nn.Module):
    """x → Linear(2, 3) → BatchNorm1d(3) → tanh → Linear(3, 2): small enough to evaluate by hand."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1, self.bn, self.lin2 = torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-3, 3)        # stored statistics far from any point's own
            self.bn.running_var.uniform_(5, 9)
        self.double().eval()

    def forward(self, x):
        return self.lin2(torch.tanh(self.bn(self.lin1(x))))


def _hand_loss(w: dict, X: np.ndarray, y: np.ndarray, batches: int) -> float:
    """Cross-entropy of the BN net at weights w in eval mode, with the running statistics a fresh pass over
    the data in `batches` equal batches leaves: the average of the batch means and of the unbiased batch
    variances (torch's cumulative average, momentum=None). numpy float64, no torch module involved."""
    p = {k: v.numpy() for k, v in w.items()}
    h = X @ p["lin1.weight"].T + p["lin1.bias"]
    parts = np.split(h, batches)
    mean = np.mean([b.mean(0) for b in parts], 0)
    var = np.mean([b.var(0, ddof=1) for b in parts], 0)
    z = np.tanh((h - mean) / np.sqrt(var + 1e-5) * p["bn.weight"] + p["bn.bias"])
    logits = z @ p["lin2.weight"].T + p["lin2.bias"]
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("batches", [1, 2])
def test_barrier_between_batchnorm_checkpoints_equals_the_hand_computation(batches):
    """Every point of the path gets its own BatchNorm statistics (the default); the model's stored ones
    (checkpoint A's) at every point would give another loss at t = 1 than B's own."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    model_a, model_b = _BNNet(1), _BNNet(2)
    a, b = parameters_of(model_a), parameters_of(model_b)
    t = np.linspace(0, 1, 5)
    hand = np.array([_hand_loss({k: (1 - s) * a[k] + s * b[k] for k in a}, X.numpy(), y.numpy(), batches)
                     for s in t])
    path = linear_path(model_a, F.cross_entropy, (X, y), a, b, n=5, batch_size=8 // batches)
    np.testing.assert_allclose(path.loss, hand, rtol=1e-12)
    hand_barrier = np.max(hand - ((1 - t) * hand[0] + t * hand[-1]))
    assert path.barrier == pytest.approx(hand_barrier, rel=1e-10, abs=1e-14) and path.bn == "recompute"
    with torch.no_grad():
        stored = float(F.cross_entropy(model_a.eval()(X), y))   # A's stored statistics: not A's own loss
    assert abs(stored - hand[0]) > 0.01
    with pytest.raises(LandscapeError, match="belong to one endpoint"):
        linear_path(model_a, F.cross_entropy, (X, y), a, b, n=5, bn="eval")


def test_bezier_curve_of_batchnorm_checkpoints_uses_each_points_statistics():
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    model_a, model_b = _BNNet(3), _BNNet(4)
    a, b = parameters_of(model_a), parameters_of(model_b)
    c = {k: (a[k] + b[k]) / 2 + 0.3 for k in a}
    curve = bezier_path(model_a, F.cross_entropy, (X, y), a, c, b, n=3)
    hand = [_hand_loss({k: (1 - s) ** 2 * a[k] + 2 * s * (1 - s) * c[k] + s ** 2 * b[k] for k in a},
                       X.numpy(), y.numpy(), 1) for s in (0, 0.5, 1)]
    np.testing.assert_allclose(curve.loss, hand, rtol=1e-12)
    with pytest.raises(LandscapeError, match="belong to one endpoint"):
        bezier_path(model_a, F.cross_entropy, (X, y), a, c, b, n=3, bn="eval")
