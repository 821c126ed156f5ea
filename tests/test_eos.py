"""landscape.experiment.eos: the edge-of-stability grid's statistics on constructed records with known
answers, the declared verdict rule, and one tiny full-batch run whose λmax is checked against a dense
Hessian of the very loss being descended."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import stats
from landscape.experiment import eos


def records(series: list[float], every: int = 10, loss: float = 0.5) -> list[dict]:
    rows = [{"step": every * i, "block": "model", "metric": "eos_ratio", "value": v} for i, v in enumerate(series)]
    rows += [{"step": every * i, "block": "model", "metric": "grad_top_fraction", "value": 0.9}
             for i in range(len(series))]
    return rows + [{"step": every * (len(series) - 1), "block": "model", "metric": "train_loss", "value": loss}]


def test_edge_verdict_follows_the_declared_band():
    def iv(lo, hi):
        return stats.Interval((lo + hi) / 2, lo, hi)

    assert eos.edge_verdict(iv(0.9, 1.1)) == "at the edge"
    assert eos.edge_verdict(iv(0.2, 0.7)) == "below"
    assert eos.edge_verdict(iv(1.3, 2.0)) == "above"
    assert eos.edge_verdict(iv(0.5, 1.1)) == "inconclusive"
    assert eos.edge_verdict(iv(math.nan, math.nan)) == "inconclusive"


def test_summary_statistics_on_constructed_series():
    # 10 measurements at steps 0..90: the last third is steps > 60, i.e. 70, 80, 90
    seeds = [records([0.1, 0.3, 0.95, 1.0, 1.05, 1.2, 0.9, 1.0, 1.1, 1.3]),
             records([0.1, 0.2, 0.5, 0.92, 1.0, 1.0, 1.0, 0.95, 1.05, 1.0]),
             records([0.1, 0.2, 0.4, 0.6, 0.95, 1.0, 1.0, 1.0, 0.9, 1.15])]
    (row,) = eos.summarize_eos({("plain", 0.1): seeds})
    late = [np.mean([1.0, 1.1, 1.3]), np.mean([0.95, 1.05, 1.0]), np.mean([1.0, 0.9, 1.15])]
    assert row["late_eos_ratio"]["mean"] == pytest.approx(np.mean(late))
    assert row["late_eos_ratio"]["n"] == 3
    assert row["late_eos_ratio"]["low"] == pytest.approx(stats.t_ci(late).low)
    assert row["late_median_eos_ratio"]["mean"] == pytest.approx(np.mean([1.1, 1.0, 1.0]))
    assert row["late_within_10pct"]["mean"] == pytest.approx(np.mean([2 / 3, 1.0, 2 / 3]))
    assert row["max_eos_ratio"]["mean"] == pytest.approx(np.mean([1.3, 1.05, 1.15]))
    assert row["first_step_at_0.9"]["mean"] == pytest.approx(np.mean([20, 30, 40]))
    assert row["two_over_lr"] == pytest.approx(20.0) and row["diverged"] == 0
    assert row["verdict"] == eos.edge_verdict(stats.t_ci(late)) == "at the edge"
    assert math.isnan(row["late_negative_ratio"]["mean"])  # not measured: reported as missing, not as 0
    assert "| plain | 0.1 | 20 | 3 |" in eos.eos_table([row])


def test_a_tiny_full_batch_run_measures_the_sharpness_of_the_loss_it_descends():
    cfg = eos.EosConfig(depth=3, width=6, n_samples=48, steps=4, every=2, k=2, full_every=2, slq_iters=8,
                        slq_vectors=2, seeds=1)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(48, 40, generator=g), torch.randint(0, 10, (48,), generator=g)
    lr = 0.05
    recs = eos.run_one("residual_preact", lr, 0, cfg, X, y)
    lam = {r["step"]: r["value"] for r in recs if r["metric"] == "lambda_max"}
    assert sorted(lam) == [0, 2, 4]
    ratio = {r["step"]: r["value"] for r in recs if r["metric"] == "eos_ratio"}
    assert all(ratio[s] == pytest.approx(lam[s] * lr / 2, rel=1e-9) for s in lam)
    assert sorted(r["step"] for r in recs if r["metric"] == "train_loss") == [2, 4]
    assert [r["step"] for r in recs if r["metric"] == "negative_ratio"] == [0, 4]  # every full_every-th
    # another seed is another initialization (full-batch GD has no other randomness)
    other = eos.run_one("residual_preact", lr, 1, cfg, X, y)
    assert next(r["value"] for r in other if r["metric"] == "lambda_max") != pytest.approx(lam[0], rel=1e-3)
    # λmax at step 0: the dense float64 Hessian of the full-batch training loss at initialization
    model = eos.build("fc", depth=3, width=6, seed=0, **eos.NETS["residual_preact"]).double()
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def loss(*ps):
        out = torch.func.functional_call(model, dict(zip(names, ps)), (X.double(),))
        return F.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(loss, params)
    n = [p.numel() for p in params]
    dense = torch.cat([torch.cat([H[i][j].reshape(n[i], n[j]) for j in range(len(n))], 1) for i in range(len(n))])
    assert lam[0] == pytest.approx(torch.linalg.eigvalsh(dense)[-1].item(), rel=1e-3)
