"""Error bars: λmax's data noise against exact per-batch Hessians, the vector-noise stderrs against their
observed spread over seeds, and the scale-free degeneracy measures against exact spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.hessian import HessianOperator, exact_hessian, slq_density
from landscape.hessian.solvers.errorbars import rayleigh_stderr, weighted_stderr

from . import tiny

D = torch.float64


def test_weighted_stderr_equal_weights_is_sd_over_root_n():
    x = np.array([1.0, 3.0, 2.0, 7.0, 4.0])
    mean, se = weighted_stderr(x, np.full(5, 32))
    assert mean == pytest.approx(x.mean())
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(5))
    assert math.isnan(weighted_stderr(x[:1], np.ones(1))[1])


def test_weighted_stderr_is_calibrated_for_unequal_batches():
    """Per-batch means of batches of unequal size, drawn many times: the reported stderr matches the
    observed spread of the weighted mean."""
    rng = np.random.default_rng(0)
    sizes = np.array([64, 64, 64, 32, 16, 16, 8, 8, 100])
    means, ses = [], []
    for _ in range(3000):
        vals = np.array([rng.normal(5.0, 2.0, n).mean() for n in sizes])
        m, se = weighted_stderr(vals, sizes)
        means.append(m)
        ses.append(se)
    assert np.sqrt(np.mean(np.square(ses))) == pytest.approx(np.std(means), rel=0.1)


@pytest.fixture(scope="module")
def batched():
    torch.manual_seed(0)
    model = tiny.mlp(5, 8, 3).eval()
    X, y = tiny.data((5,), n=48)
    batches = [(X[i : i + 6], y[i : i + 6]) for i in range(0, 48, 6)]
    H = exact_hessian(model, tiny.loss, (X, y))
    Hb = [exact_hessian(model, tiny.loss, b) for b in batches]
    return model, (X, y), batches, H, Hb


def test_lambda_max_stderr_from_exact_per_batch_hessians(batched):
    model, _, batches, H, Hb = batched
    op = HessianOperator(model, tiny.loss, batches, dtype=D, merge_batches=False)
    sd = slq_density(op, iters=min(40, op.dim), vectors=4, seed=0, top_k=2)
    w, V = torch.linalg.eigh(H)
    assert sd.top.eigenvalues[0] == pytest.approx(float(w[-1]), rel=1e-9)
    v = V[:, -1]
    rho = np.array([float(v @ h @ v) for h in Hb])
    mean, se = weighted_stderr(rho, np.full(8, 6))
    s = sd.summary()
    assert s["lambda_max_batches"] == 8
    assert s["lambda_max_stderr"] == pytest.approx(se, rel=1e-6)
    assert mean == pytest.approx(float(w[-1]), rel=1e-9)
    assert s["lambda_max_noisy"] == (se > 0.05 * float(w[-1]))
    assert s["lambda_max_residual"] <= 1e-6 * float(w[-1])


def test_one_batch_is_cut_into_pieces(batched):
    model, (X, y), _, H, _ = batched
    op = HessianOperator(model, tiny.loss, (X, y), dtype=D)
    v = torch.linalg.eigh(H)[1][:, -1]
    got = rayleigh_stderr(op, v)
    pieces = [exact_hessian(model, tiny.loss, (X[i : i + 6], y[i : i + 6])) for i in range(0, 48, 6)]
    ref = weighted_stderr(np.array([float(v @ h @ v) for h in pieces]), np.full(8, 6))
    assert got["batches"] == 8
    assert got["value"] == pytest.approx(ref[0], rel=1e-9)
    assert got["stderr"] == pytest.approx(ref[1], rel=1e-6)


def test_operator_without_batches_gives_nan():
    sd = slq_density(tiny.dense_with_eigenvalues(np.linspace(-1, 5, 60)), iters=30, vectors=2, top_k=1)
    s = sd.summary()
    assert math.isnan(s["lambda_max_stderr"]) and s["lambda_max_noisy"] is False and s["lambda_max_batches"] == 0


def _known() -> np.ndarray:
    """400 eigenvalues: 300 exact zeros, 40 negative, 57 bulk, 3 outliers (λmax = 50)."""
    return np.concatenate([np.zeros(300), -np.linspace(0.1, 0.5, 40), np.linspace(0.1, 1, 57), [10.0, 20.0, 50.0]])


def test_vector_stderrs_match_the_spread_over_seeds():
    eigs = _known()
    op = tiny.dense_with_eigenvalues(eigs)
    rows = [slq_density(op, iters=30, vectors=4, seed=s).summary() for s in range(40)]
    for key in ("negative_ratio", "degenerate_ratio", "trace", "mass_below_1e-03"):
        values = np.array([r[key] for r in rows])
        ses = np.array([r[key + "_stderr"] for r in rows])
        assert 0.6 < np.sqrt(np.mean(ses**2)) / values.std(ddof=1) < 1.6, key


def test_scale_free_degeneracy_measures_against_the_exact_spectrum():
    eigs = np.concatenate([np.zeros(150), 1e-4 * np.ones(100), np.linspace(0.1, 1.0, 146), [10.0, 20.0, 30.0, 50.0]])
    op = tiny.dense_with_eigenvalues(eigs)
    sd = slq_density(op, iters=60, vectors=32, seed=0)
    s = sd.summary(thresholds=(1e-3, 1e-5), bulk_eps=1e-2)
    exact_mass = {t: np.mean(np.abs(eigs) < t) for t in (1e-3, 1e-5)}
    for t, key in ((1e-3, "mass_below_1e-03"), (1e-5, "mass_below_1e-05")):
        assert abs(s[key] - exact_mass[t]) < 4 * s[key + "_stderr"] + 0.02, key
    # the exact median |λ| is 1e-4; quadrature merges the 0 and 1e-4 clusters into nodes between them
    assert 1e-5 < s["median_abs_eigenvalue"] <= 1.01e-4
    a = np.abs(eigs)
    p = a / a.sum()
    erank = math.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert abs(s["effective_rank"] - erank) < 4 * s["effective_rank_stderr"] + 0.02 * erank
    # scaling the matrix moves λmax-relative and absolute measures' thresholds, not these two
    scaled = slq_density(tiny.dense_with_eigenvalues(1e3 * eigs), iters=60, vectors=32, seed=0).summary(bulk_eps=1e-2)
    assert scaled["effective_rank"] == pytest.approx(s["effective_rank"], rel=1e-6)
    assert scaled["bulk_degenerate_ratio"] == pytest.approx(s["bulk_degenerate_ratio"], abs=1e-9)
