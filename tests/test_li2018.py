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


def test_the_default_tolerance_finds_lambda_min_past_a_near_null_space():
    """H = A by construction (outputs are the weights, loss ½ oᵀAo): 400 zero eigenvalues, λmax = 100 and a
    single λmin = −0.5 (ratio 0.005). A stopping rule relative to max|θ| stopped the λmin solve on the null space
    at a tolerance of 10⁻²; judged against each pair's own |θ|, both the default and 10⁻² find −0.5."""
    n = 600
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([100.0, -0.5]), torch.linspace(1.0, 60.0, n - 402, dtype=torch.float64),
                     torch.zeros(400, dtype=torch.float64)])
    A = (Q * lam) @ Q.T
    model = torch.nn.Linear(n, 1, bias=False).double()

    def quadratic(out, target):                     # out [n, 1]: the weights themselves
        o = out[:, 0]
        return 0.5 * o @ (A @ o)

    data = (torch.eye(n, dtype=torch.float64), torch.zeros(n))
    ext = curvature_extremes(model, quadratic, data)
    assert ext["lambda_max"] == pytest.approx(100.0, rel=1e-6)
    assert ext["lambda_min"] == pytest.approx(-0.5, rel=1e-3) and ext["ratio"] == pytest.approx(0.005, rel=1e-3)
    loose = curvature_extremes(model, quadratic, data, tol=1e-2)  # each pair judged against its own |θ|: the
    assert loose["lambda_min"] == pytest.approx(-0.5, rel=1e-2)  # loose solve no longer stops on the null space


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


def test_a_tiny_grid_runs_end_to_end_and_its_tables_and_figures_read_the_records(tmp_path, monkeypatch):
    """Two seeds of depth-8 ResNets and FC nets, one epoch each, a coarse grid: records are written once
    (a second call trains nothing), and the study's tables and figures come from them."""
    from landscape.experiment.store import Store
    from landscape.experiment.studies import li2018 as study

    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    cfg = li2018.LiConfig(seeds=(0, 1), depths=(8,), epochs=1, n_train=200, measure_samples=32, hessian_samples=16,
                          axis=(-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0), map_axis=(-0.5, 0.0, 0.5), max_matmats=6,
                          resnet_width=4, fc_width=8)
    records = tmp_path / "records" / study.RECORDS
    runs = li2018.run_li(tmp_path / "runs", records, cfg)
    assert sorted(runs) == ["fc_noshort_8", "fc_short_8", "resnet_noshort_8", "resnet_short_8"]
    rec = runs["resnet_short_8"][1]
    assert rec["seed"] == 1 and len(rec["history"]) == 1 and len(rec["measure"]["map"]) == 9
    assert np.asarray(rec["measure"]["loss"]).shape == (7, 7) and rec["config"]["loss"] == "ce"
    stamp = (records / "fc_short_8_seed0.json").stat().st_mtime_ns
    li2018.run_li(tmp_path / "runs", records, cfg)
    assert (records / "fc_short_8_seed0.json").stat().st_mtime_ns == stamp
    store = Store(tmp_path / "records")
    table = store.table("li2018_cells")
    assert table.count("\n") == 5 and "| ResNet, no shortcuts | 8 | 2 |" in table
    assert "`noshort_56`" in store.table("li2018_verdicts")
    for name, draw in study.FIGURES.items():
        fig = draw(store, tmp_path / "figures" / name)
        assert (tmp_path / "figures" / f"{name}.png").exists() and fig is not None
    # a claim whose cells are missing has n = 0 and stays inconclusive
    assert all(r["test"]["n"] == 0 and r["verdict"] == "inconclusive" for r in li2018.judge_li(runs))


def test_claims_on_constructed_records_are_log_ratios_paired_by_seed_with_holm():
    def recs(vals: list[float], cell: str) -> list[dict]:
        fam, var, depth = cell.split("_")
        return [{"seed": s, "family": fam, "variant": var, "depth": int(depth), "keys": {"nonconvexity": v},
                 "final": {}} for s, v in enumerate(vals)]

    base = [0.01, 0.012, 0.009, 0.011, 0.01]
    values = {"resnet_noshort_56": [10 * b for b in base], "resnet_short_56": base,
              "resnet_noshort_110": [1.1 * b for b in base[::-1]], "resnet_short_110": base,
              "resnet_noshort_20": base, "resnet_short_20": base,
              "fc_noshort_56": base, "fc_short_56": base, "fc_noshort_110": base, "fc_short_110": base}
    rows = {r["name"]: r for r in li2018.judge_li({c: recs(v, c) for c, v in values.items()})}
    assert rows["noshort_56"]["test"]["estimate"] == pytest.approx(10.0) and rows["noshort_56"]["verdict"] == "agrees"
    # 110: the log-ratios are log(1.1 · base reversed / base); by hand
    d = np.log(1.1 * np.array(base[::-1]) / np.array(base))
    assert rows["noshort_110"]["test"]["estimate"] == pytest.approx(np.exp(d.mean()))
    from scipy import stats as sps

    assert rows["noshort_110"]["test"]["p"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
    # interaction: log(noshort110/short110) − log(noshort20/short20) = d, the derived cells' log-ratio
    assert rows["shortcut_effect_grows"]["test"]["estimate"] == pytest.approx(np.exp(d.mean()))
    from landscape import stats

    ps = [rows[k]["test"]["p"] for k in li2018.CLAIMS]
    holm = stats.holm([np.nan if p is None else p for p in ps])
    assert [rows[k]["p_holm"] for k in li2018.CLAIMS] == pytest.approx([None if np.isnan(h) else h for h in holm])
    assert all(r["m"] == 6 and r["status"] == "confirmatory" and r["declared"] == li2018.DECLARED
               for r in rows.values())


def test_a_diverged_run_is_recorded_without_a_measurement(tmp_path, monkeypatch):
    def diverge(cfg):
        raise li2018.NonFiniteLoss("training loss became nan in epoch 1")

    monkeypatch.setattr(li2018, "train", diverge)
    cfg = li2018.LiConfig(seeds=(0,), depths=(8,), families=("fc",))
    rec = li2018.run_one("fc", "noshort", 8, 0, cfg, tmp_path, (torch.zeros(2, 40), torch.zeros(2, dtype=torch.long)))
    assert rec["measure"] is None and "nan" in rec["diverged"] and np.isnan(rec["keys"]["nonconvexity"])
    assert np.isnan(li2018.per_seed({"fc_noshort_8": [rec]}, "fc_noshort_8", "nonconvexity")[0])
