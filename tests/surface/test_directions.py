"""Directions: filter/layer normalization, seeds, eigenvector and flat forms, PCA against numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.surface import (
    as_direction,
    difference,
    eigen_directions,
    parameters_of,
    pca_directions,
    random_directions,
)
from tests.surface.models import conv_bn, mlp


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def test_every_filter_has_its_weight_filters_norm_and_biases_are_zero():
    model = conv_bn()
    w = parameters_of(model)
    (d,) = random_directions(model, 1, seed=3)
    assert list(d) == list(w)
    checked = 0
    for name, t in d.items():
        if w[name].dim() <= 1:
            assert torch.count_nonzero(t) == 0, name
        else:
            torch.testing.assert_close(_filter_norms(t), _filter_norms(w[name]), rtol=1e-9, atol=1e-12)
            assert not torch.allclose(t / t.norm(), w[name] / w[name].norm())  # a new direction, not w
            checked += 1
    assert checked == 3  # two convolutions and the head


def test_include_bias_norm_and_layer_and_no_normalization():
    model = conv_bn()
    w = parameters_of(model)
    (inc,) = random_directions(model, 1, seed=0, include_bias_norm=True)
    for name in ("c1.bias", "bn.weight", "bn.bias", "head.bias"):
        torch.testing.assert_close(inc[name].norm(), w[name].norm())
    (lay,) = random_directions(model, 1, seed=0, norm="layer")
    for name, t in lay.items():
        if w[name].dim() > 1:
            torch.testing.assert_close(t.norm(), w[name].norm())
            assert not torch.allclose(_filter_norms(t), _filter_norms(w[name]))
    (raw,) = random_directions(model, 1, seed=0, norm="none")
    g = torch.Generator().manual_seed(0)
    draws = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in w.items()}
    torch.testing.assert_close(raw["c1.weight"], draws["c1.weight"])
    assert torch.count_nonzero(raw["c1.bias"]) == 0


def test_same_seed_same_directions_other_seed_other():
    model = mlp()
    a, b = random_directions(model, 2, seed=5), random_directions(model, 2, seed=5)
    c = random_directions(model, 2, seed=6)
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k])
    assert not torch.equal(a[0]["0.weight"], c[0]["0.weight"])
    assert not torch.equal(a[0]["0.weight"], a[1]["0.weight"])  # the two directions differ


def test_bad_norm_and_bad_shapes_are_one_line_errors():
    model = mlp()
    with pytest.raises(LandscapeError, match="norm must be one of"):
        random_directions(model, 1, norm="unit")
    with pytest.raises(LandscapeError, match="flat direction must be a vector of"):
        as_direction(model, torch.zeros(3))
    with pytest.raises(LandscapeError, match="has shape"):
        as_direction(model, {"0.weight": torch.zeros(2, 2)})
    with pytest.raises(LandscapeError, match="not a parameter"):
        as_direction(model, {"nope": torch.zeros(2)})
    with pytest.raises(LandscapeError, match="expected shape"):
        eigen_directions(model, torch.zeros(10, 2))
    with pytest.raises(LandscapeError, match="do not match"):
        difference(parameters_of(model), parameters_of(mlp(width=8)))


def test_flat_and_eigenvector_forms_round_trip_and_are_unit():
    model = mlp()
    w = parameters_of(model)
    dim = sum(p.numel() for p in w.values())
    v = torch.randn(dim, 2, dtype=torch.float64)
    dirs = eigen_directions(model, v)
    for j, d in enumerate(dirs):
        flat = torch.cat([t.reshape(-1) for t in d.values()])
        torch.testing.assert_close(flat.norm(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(flat, v[:, j] / v[:, j].norm())
        assert torch.equal(torch.cat([t.reshape(-1) for t in as_direction(model, flat).values()]), flat)
    # a subset of parameters (the operator's names): the others are zero
    names = ["2.weight", "2.bias"]
    sub = eigen_directions(model, torch.ones(w["2.weight"].numel() + 7), names)[0]
    assert torch.count_nonzero(sub["0.weight"]) == 0 and torch.count_nonzero(sub["2.bias"]) == 7


def test_pca_directions_are_orthonormal_with_numpys_explained_variance():
    model = mlp()
    g = torch.Generator().manual_seed(0)
    final = parameters_of(model)
    traj = [{k: v + torch.randn(v.shape, generator=g, dtype=v.dtype) * (0.5 + i) for k, v in final.items()}
            for i in range(6)] + [final]
    pca = pca_directions(traj, n=2)
    V = torch.stack([torch.cat([t.reshape(-1) for t in d.values()]) for d in pca.directions])
    torch.testing.assert_close(V @ V.T, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0)
    M = np.stack([torch.cat([(p[k] - final[k]).reshape(-1) for k in final]).numpy() for p in traj[:-1]])
    s = np.linalg.svd(M - M.mean(0), compute_uv=False)
    np.testing.assert_allclose(pca.explained_variance_ratio, s[:2] ** 2 / (s ** 2).sum(), rtol=1e-10)
    np.testing.assert_allclose(pca.singular_values, s[:2], rtol=1e-10)
    # the projected trajectory: the final point at the origin, the others the dot products
    np.testing.assert_allclose(pca.coords[-1], 0, atol=1e-14)
    np.testing.assert_allclose(pca.coords[:-1], M @ V.numpy().T, rtol=1e-10)
    with pytest.raises(LandscapeError, match="at least 2 checkpoints"):
        pca_directions(traj[:1])
    with pytest.raises(LandscapeError, match="does not move"):
        pca_directions([final, final, final])
