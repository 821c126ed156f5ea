"""landscape.experiment.eos: the step-size sweep's statistics on constructed records with known answers, the
declared verdicts (equivalence test, simultaneous intervals, Holm), and tiny full-batch GD and Adam runs whose
sharpness is checked against a dense float64 Hessian of the very loss being descended."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from landscape.experiment import eos
from landscape.hessian import exact_hessian
from landscape.models import build
from landscape.train.losses import resolve_loss


def record(ratios: list[float], lam0: float = 2.0, optimizer: str = "gd", every: int = 10,
           diverged: bool = False) -> dict:
    rows = [{"step": every * i, "loss": 1.0 / (i + 1), "acc": 0.5 + 0.01 * i, "eos_ratio": r,
             ("lambda_max" if optimizer == "gd" else "lambda_p"): lam0 * r / ratios[0]} for i, r in enumerate(ratios)]
    return {"cell": {"optimizer": optimizer, "net": "fc_relu", "loss": "mse", "lr": 0.1}, "seed": 0, "rows": rows,
            "diverged": diverged}


def test_run_keys_on_a_constructed_series():
    keys = eos.run_keys(record([0.2, 0.4, 0.8, 0.95, 1.3, 1.0, 0.7, 1.1]))
    # first reach of 0.9 at index 3 (step 30); after it: 0.95, 1.3, 1.0, 0.7, 1.1
    assert keys["first_step"] == 30 and keys["reached"]
    assert keys["edge_ratio"] == pytest.approx(np.median([0.95, 1.3, 1.0, 0.7, 1.1]))
    assert keys["within_band"] == pytest.approx(3 / 5)
    assert keys["max_ratio"] == 1.3 and keys["initial_ratio"] == 0.2
    assert keys["sharpening"] == pytest.approx(0.95 / 0.2)          # λ at the first reach over λ at step 0
    assert keys["final_loss"] == pytest.approx(1 / 8) and keys["final_acc"] == pytest.approx(0.57)
    never = eos.run_keys(record([0.2, 0.3, 0.5, 0.4]))
    assert not never["reached"] and math.isnan(never["edge_ratio"]) and never["sharpening"] == pytest.approx(2.5)
    assert math.isnan(eos.run_keys(record([0.5, 1.0], diverged=True))["final_loss"])


def test_post_hoc_keys_of_a_run_that_starts_above_the_edge():
    keys = eos.run_keys(record([1.4, 0.5, 0.6, 0.8, 0.95, 1.0, 1.05]))
    assert keys["first_step"] == 0 and keys["edge_ratio"] == pytest.approx(0.95)    # declared: from step 0
    assert keys["reentry_edge_ratio"] == pytest.approx(1.0)                        # after re-entering 0.9
    assert keys["sharpening_from_min"] == pytest.approx(0.95 / 0.5)                # lowest λ to the re-entry
    stable = eos.run_keys(record([0.2, 0.4, 0.8, 0.95, 1.3, 1.0, 0.7, 1.1]))
    assert stable["reentry_edge_ratio"] == stable["edge_ratio"]
    assert stable["sharpening_from_min"] == stable["sharpening"]


def test_the_one_sided_log_test_is_scipys():
    v = [1.1, 0.95, 1.2, 1.05, 1.0]
    for null, greater in ((0.8, True), (1.25, False)):
        ref = sps.ttest_1samp(np.log(v), math.log(null), alternative="greater" if greater else "less").pvalue
        assert eos._one_sided_log(v, null, greater) == pytest.approx(ref, rel=1e-10)


def test_verdicts_on_constructed_cells():
    at_edge = [record([0.5, 0.95, r, r, r]) for r in (1.0, 1.02, 0.98, 1.05, 1.01)]
    above = [record([0.5, 0.95, r, r, r]) for r in (2.0, 2.2, 1.9, 2.1, 2.05)]
    wide = [record([0.5, 0.95, r, r, r]) for r in (0.6, 1.4, 0.7, 1.6, 1.0)]
    never = [record([0.2, 0.3, 0.4]) for _ in range(5)]
    rows = {r["lr"]: r for r in eos.judge_eos({("gd", "fc_relu", "mse", 0.1): at_edge,
                                                  ("gd", "fc_relu", "mse", 0.2): above,
                                                  ("gd", "fc_relu", "mse", 0.3): wide,
                                                  ("gd", "fc_relu", "mse", 0.4): never})}
    assert rows[0.1]["edge_verdict"] == "at the edge" and rows[0.1]["p_edge_holm"] < 0.05
    assert rows[0.2]["edge_verdict"] == "above" and rows[0.3]["edge_verdict"] == "inconclusive"
    assert rows[0.4]["edge_verdict"] == "never reached" and rows[0.4]["reached"]["estimate"] == 0
    gm = math.exp(np.mean(np.log([1.0, 1.02, 0.98, 1.05, 1.01])))
    assert rows[0.1]["edge_ratio"]["estimate"] == pytest.approx(gm)
    assert 0 < rows[0.3]["edge_ratio"]["low"] < rows[0.3]["edge_ratio"]["high"]     # a log interval: positive
    # sharpening 0.95/0.5 = 1.9 in every seed of a stable-at-init cell: agrees; Holm over 3 + 4 tests
    assert rows[0.1]["sharpening"]["estimate"] == pytest.approx(1.9) and rows[0.1]["sharpening_verdict"] == "agrees"


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("loss", eos.LOSSES)
def test_a_tiny_gd_run_measures_the_sharpness_of_the_loss_it_descends(loss, monkeypatch):
    monkeypatch.setitem(eos.NETS, "tiny", {"kind": "residual", "block": "preact", "norm": "none", "init": "he",
                                           "branch_scale": "inv_sqrt_depth", "depth": 3, "width": 6})
    X, y = _data()
    cfg = eos.EosConfig(n_samples=48, steps=4, every=2, seeds=(0,), tol=1e-6)
    rec = eos.run_one("gd", "tiny", loss, 0.05, 0, cfg, X, y)
    assert [r["step"] for r in rec["rows"]] == [0, 2, 4] and not rec["diverged"]
    assert all(r["eos_ratio"] == pytest.approx(r["lambda_max"] * 0.05 / 2, rel=1e-12) for r in rec["rows"])
    model = build("fc", seed=0, **eos.NETS["tiny"]).double()
    dense = np.linalg.eigvalsh(exact_hessian(model, resolve_loss(loss), (X.double(), y)).numpy())
    assert rec["rows"][0]["lambda_max"] == pytest.approx(dense[-1], rel=1e-4)
    with torch.no_grad():
        assert rec["rows"][0]["loss"] == pytest.approx(resolve_loss(loss)(model(X.double()), y).item(), rel=1e-5)
    other = eos.run_one("gd", "tiny", loss, 0.05, 1, cfg, X, y)        # another seed, another initialization
    assert other["rows"][0]["lambda_max"] != pytest.approx(rec["rows"][0]["lambda_max"], rel=1e-3)


def test_a_tiny_adam_run_compares_the_preconditioned_sharpness_with_cohen_2022s_threshold(monkeypatch):
    monkeypatch.setitem(eos.NETS, "tiny", {"kind": "plain", "depth": 2, "width": 6})
    X, y = _data()
    cfg = eos.EosConfig(n_samples=48, steps=4, every=2, seeds=(0,))
    rec = eos.run_one("adam", "tiny", "mse", 1e-3, 0, cfg, X, y)
    assert "lambda_p" not in rec["rows"][0]                            # no preconditioner before the first step
    b1 = eos.ADAM["betas"][0]
    for r in rec["rows"][1:]:
        assert r["lambda_p"] > 0
        assert r["eos_ratio"] == pytest.approx(r["lambda_p"] * 1e-3 * (1 - b1) / (2 + 2 * b1), rel=1e-12)


def test_records_round_floats_to_six_significant_digits_and_write_nan_as_null(tmp_path):
    from landscape.io import read_json, write_json

    write_json(tmp_path / "r.json", {"a": [math.pi, 1234567.891, math.nan], "b": {"c": 1e-12 / 3}, "n": 3},
               indent=None, digits=6)
    assert read_json(tmp_path / "r.json") == {"a": [3.14159, 1234570.0, None], "b": {"c": 3.33333e-13}, "n": 3}


def test_secondary_statistics_get_intervals_inside_their_range():
    """A count, a fraction and a ratio over two or three seeds: the t interval would cross 0 or 1 (the table once
    printed a first step of 640 [-7490, 8770]); the declared shapes keep every bound in range and the estimate
    inside its interval."""
    first = eos.shaped_summary("first_step", [0.0, 1280.0])
    assert first["low"] == 0.0 and first["high"] > 1280 and first["method"] == "t"
    band = eos.shaped_summary("within_band", [0.0, 1.0, 0.9])
    assert 0 < band["low"] < band["estimate"] < band["high"] < 1 and band["method"] == "logit-t"
    ratio = eos.shaped_summary("max_ratio", [1.1, 3.0, 12.0])
    assert 0 < ratio["low"] < ratio["estimate"] < ratio["high"] and ratio["method"] == "log-t"
    assert ratio["estimate"] == pytest.approx((1.1 * 3.0 * 12.0) ** (1 / 3))
    assert eos.shaped_summary("final_acc", [math.nan]) is None
