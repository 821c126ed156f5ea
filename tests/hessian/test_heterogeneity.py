"""Jensen-Shannon distances between block densities against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from landscape.errors import LandscapeError
from landscape.hessian import SpectralDensity
from landscape.hessian.blocks import (
    MAX_DISTANCE,
    heterogeneity,
    js_distance,
    js_divergence,
    pair_densities,
    vector_halves,
)


def _exact(eigs) -> SpectralDensity:
    e = np.asarray(eigs, dtype=np.float64)[None, :]
    return SpectralDensity(e, np.full_like(e, 1 / e.size), e.size)


def test_js_by_hand():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    # m = (1/4, 1/2, 1/4): KL(p‖m) = ½ log 2 + ½ log 1 = KL(q‖m), so JS = ½ log 2
    assert js_divergence(p, q) == pytest.approx(0.5 * math.log(2), rel=1e-15)
    assert js_distance(p, q) == pytest.approx(math.sqrt(0.5 * math.log(2)), rel=1e-15)
    assert js_divergence(p, p) == 0.0
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2), rel=1e-15)   # disjoint: ln 2, the maximum
    assert js_distance([2, 0, 0], [0, 0, 7]) == pytest.approx(MAX_DISTANCE, rel=1e-15)   # unnormalized weights too


def test_js_distance_equals_scipys_natural_log_jensenshannon():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(50)), rng.dirichlet(np.full(50, 0.3))
        assert js_distance(p, q) == pytest.approx(float(jensenshannon(p, q)), rel=1e-12)


def test_bad_distributions_are_refused():
    for p, q in (([1, 1], [1, 1, 1]), ([-1, 2], [1, 1]), ([0, 0], [1, 1]), ([np.nan, 1], [1, 1])):
        with pytest.raises(LandscapeError):
            js_divergence(p, q)


def test_pair_grid_and_smoothing():
    a, b = _exact([0.0, 1.0]), _exact([2.0, 3.0])
    grid, pa, pb = pair_densities(a, b, bandwidth=0.01, n_grid=1000)
    sigma = 0.01 * 3.0
    assert grid[0] == pytest.approx(-5 * sigma) and grid[-1] == pytest.approx(3 + 5 * sigma) and grid.size == 1000
    assert pa.sum() == pytest.approx(1) and pb.sum() == pytest.approx(1)
    # supports 1 apart, σ = 0.03: the Gaussians do not overlap, the distance is the maximum
    assert js_distance(pa, pb) == pytest.approx(MAX_DISTANCE, abs=1e-9)


def test_heterogeneity_matrix_mean_and_invariances():
    base = np.linspace(0, 1, 40) ** 2
    spectra = {"x": _exact(base), "y": _exact(base), "z": _exact(10 * base), "w": _exact(base + 5)}
    het = heterogeneity(spectra)
    D = het.matrix
    assert D.shape == (4, 4) and np.allclose(D, D.T) and np.all(np.diag(D) == 0)
    assert D[0, 1] == 0.0                                          # identical densities
    assert D[0, 3] == pytest.approx(MAX_DISTANCE, abs=1e-9)        # disjoint supports
    assert 0 < D[0, 2] < MAX_DISTANCE
    assert het.mean == pytest.approx(D[np.triu_indices(4, 1)].mean())
    scaled = heterogeneity({k: SpectralDensity(v.nodes * 1e3, v.weights, v.dim) for k, v in spectra.items()})
    np.testing.assert_allclose(scaled.matrix, D, atol=1e-12)      # σ ∝ span: invariant to rescaling H
    shapes = heterogeneity(spectra, scale="own")                   # each block over its own max |λ|
    assert shapes.matrix[0, 2] == pytest.approx(0.0, abs=1e-6) and shapes.matrix[0, 1] == 0.0   # √ of ~1e-17 rounding
    assert het.to_dict()["log"] == "natural"


def test_vector_halves_give_the_estimators_own_noise():
    rng = np.random.default_rng(0)
    nodes, weights = rng.normal(size=(4, 10)), rng.dirichlet(np.ones(10), size=4)
    first, second = vector_halves(SpectralDensity(nodes, weights, 100))
    np.testing.assert_array_equal(first.nodes, nodes[:2])
    np.testing.assert_array_equal(second.weights, weights[2:])
    with pytest.raises(LandscapeError):
        vector_halves(_exact([1.0, 2.0]))


def test_denormal_tails_do_not_overflow():
    """A Gaussian tail at 5e-324 (whose half underflows to 0) contributes nothing instead of an infinite log."""
    tiny = np.nextafter(0, 1)
    p, q = np.array([0.5, 0.5, tiny]), np.array([0.5, 0.5, 0.0])
    assert js_divergence(p, q) == pytest.approx(0.0, abs=1e-300)
