"""landscape.experiment.nonconvexity and li2018: Li et al.'s |λmin/λmax| against a dense float64 Hessian and
numpy's eigvalsh, the surface's finite-difference Hessians against closed forms, and the per-run keys on
constructed measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.experiment import li2018
from landscape.experiment.nonconvexity import curvature_extremes, surface_hessians, surface_nonconvexity
from landscape.hessian import exact_hessian
from landscape.models import build
from landscape.train.losses import square_loss


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, square_loss], ids=["ce", "mse"])
def test_curvature_extremes_match_the_dense_hessian(loss_fn):
    torch.manual_seed(0)
    model = build("fc", kind="residual", block="preact", norm="none", depth=3, width=8, in_dim=6, n_classes=3,
                  seed=0).double()
    X, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    eig = np.linalg.eigvalsh(exact_hessian(model, loss_fn, (X, y)).numpy())
    assert eig[0] < -1e-3 * eig[-1]                           # a point with real negative curvature
    ext = curvature_extremes(model, loss_fn, (X, y), tol=1e-8, max_matmats=400)
    assert ext["converged_max"] and ext["converged_min"]
    assert ext["lambda_max"] == pytest.approx(eig[-1], rel=1e-6)
    assert ext["lambda_min"] == pytest.approx(eig[0], rel=1e-5)
    assert ext["ratio"] == pytest.approx(abs(eig[0]) / eig[-1], rel=1e-5)


def test_surface_hessians_are_exact_for_quadratics_on_a_non_uniform_grid():
    axis = np.asarray(li2018.AXIS)
    X, Y = np.meshgrid(axis, axis)
    fxx, fxy, fyy = surface_hessians(axis, 1.5 * X**2 + 0.7 * X * Y - 0.4 * Y**2 + 3 * X - Y)
    np.testing.assert_allclose(fxx, 3.0, atol=1e-9)
    np.testing.assert_allclose(fxy, 0.7, atol=1e-9)
    np.testing.assert_allclose(fyy, -0.8, atol=1e-9)


@pytest.mark.parametrize("a, c, expected", [(1.0, 2.0, 0.0), (1.0, -1.0, 1.0), (1.0, -0.25, 0.25)])
def test_surface_nonconvexity_of_quadratics(a, c, expected):
    # f = a x² + c y²: μ = 2a, 2c; ratio = |min(μ, 0)| / max|μ|
    axis = np.asarray(li2018.AXIS)
    X, Y = np.meshgrid(axis, axis)
    assert surface_nonconvexity(axis, a * X**2 + c * Y**2, radius=0.5) == pytest.approx(expected, abs=1e-9)


def _measurement(ratios: dict[tuple[float, float], float]) -> dict:
    axis = np.asarray(li2018.AXIS)
    X, Y = np.meshgrid(axis, axis)
    points = [{"a": a, "b": b, "lambda_max": 10.0, "lambda_min": -10.0 * r, "ratio": r, "converged_max": True,
               "converged_min": (a, b) != (0.5, 0.5)} for (a, b), r in ratios.items()]
    return {"axis": axis.tolist(), "loss": (X**2 + Y**2 + 0.1).tolist(), "accuracy": np.ones_like(X).tolist(),
            "map": points}


def test_run_keys_floor_the_ratio_and_read_the_fine_grid():
    ratios = {(a, b): 0.0 for a in li2018.MAP_AXIS for b in li2018.MAP_AXIS}
    ratios[(0.5, 0.0)], ratios[(0.0, 0.0)] = 0.4, 0.2
    keys = li2018.run_keys(_measurement(ratios))
    assert set(keys) == set(li2018.KEYS)
    # 7 off-origin ratios of 0 count as the floor 1e-3, one is 0.4: mean (7e-3 + 0.4) / 8
    assert keys["nonconvexity"] == pytest.approx((7 * li2018.RATIO_FLOOR + 0.4) / 8)
    assert keys["nonconvexity_max"] == 0.4 and keys["origin_ratio"] == 0.2 and keys["unconverged"] == 1
    # loss = x² + y² + 0.1: the rise at radius r is r² on the whole circle (grid points at 0.1 and 0.25)
    assert keys["rise_r0.1"] == pytest.approx(0.01, abs=2e-3) and keys["loss_at_minimum"] == pytest.approx(0.1)
    assert keys["rise_r0.25"] == pytest.approx(0.0625, abs=5e-3) and keys["surface_nonconvexity"] == 0.0


def test_cells_build_and_name_the_declared_depths():
    cfg = li2018.LiConfig()
    names = [li2018.cell_name(*c) for c in li2018.cells(cfg)]
    assert len(names) == 12 and names[0] == "resnet_short_20" and names[-1] == "fc_noshort_110"
    model = build(*li2018.model_spec("resnet", "noshort", 56, cfg))
    assert len(model.blocks) == 27 and all(b.shortcut is None for b in model.blocks)
    fc = build(*li2018.model_spec("fc", "short", 20, cfg))
    assert fc.blocks[1].branch_scale == pytest.approx(1 / 19**0.5)
