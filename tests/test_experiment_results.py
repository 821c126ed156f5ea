"""landscape.experiment's result definitions on constructed cases where the old definitions gave the wrong
answer (norm preservation over all blocks, a transition point at the last step), and the declared claims:
schema errors, paired differences and intervals against scipy, and the verdict from the interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.errors import LandscapeError
from landscape.experiment import config, keys, summary


def ratios(values: dict[str, float]) -> list[dict]:
    return [{"step": None, "epoch": 5, "block": b, "metric": "grad_ratio", "value": v} for b, v in values.items()]


def test_norm_preservation_leaves_the_transition_out_of_the_residual_blocks():
    # a depth-4 and a depth-16 residual net whose 40 -> width input block (a transition, no skip) has r = 0.7
    # and whose residual blocks deviate less when deeper (Theorem 1's direction)
    shallow = ratios({"blocks.0": 0.7, **{f"blocks.{i}": 1.05 for i in range(1, 4)}})
    deep = ratios({"blocks.0": 0.7, **{f"blocks.{i}": 1.01 for i in range(1, 16)}})
    old = [max(abs(math.log10(r["value"])) for r in recs) for recs in (shallow, deep)]
    assert old[0] == old[1] == pytest.approx(-math.log10(0.7))  # the old statistic: block 0's value, no trend
    new = [keys.norm_preservation(recs, transitions=["blocks.0"]) for recs in (shallow, deep)]
    assert new[0]["grad_dev_max"] == pytest.approx(math.log10(1.05))
    assert new[1]["grad_dev_max"] == pytest.approx(math.log10(1.01))
    assert new[1]["grad_dev_max"] < new[0]["grad_dev_max"]
    for n in new:  # the transition is reported separately
        assert n["grad_ratio_transition_min"] == n["grad_ratio_transition_max"] == 0.7
        assert n["grad_dev_transition_max"] == pytest.approx(-math.log10(0.7))
    assert new[1]["grad_ratio_min"] == new[1]["grad_ratio_max"] == pytest.approx(1.01)
    assert new[1]["grad_ratio_gmean"] == pytest.approx(1.01)
    # without a transition list every block counts (a net with no dimension change)
    assert keys.norm_preservation(deep)["grad_ratio_min"] == 0.7


def test_probe_keys_report_every_probe_metric_and_the_mean_deviation():
    # the centered-overlap and pair statistics of the singularity probe were computed by the probe but left
    # out of result.json (only a fixed list of metrics was averaged); every metric's block mean is kept now
    recs = [{"block": f"blocks.{i}", "metric": m, "value": v}
            for i in range(3) for m, v in (("overlap_act", 0.4), ("overlap_act_centered", 0.1 * i),
                                           ("overlap_act_centered_frac", 0.5), ("overlap_weight_pairs", 3.0))]
    recs += ratios({"blocks.0": 0.7, "blocks.1": 10.0, "blocks.2": 0.1})
    out = keys.probe_keys(recs, transitions=["blocks.0"])
    assert out["overlap_act_centered_mean"] == pytest.approx(0.1)
    assert out["overlap_act_centered_frac_mean"] == 0.5
    assert out["overlap_weight_pairs_mean"] == 3.0
    assert out["grad_absdev_mean"] == pytest.approx(1.0)  # |log10 10| and |log10 0.1|: the transition left out
    assert out["n_residual_blocks"] == 2 and out["n_blocks"] == 3
    assert keys.check_key("overlap_act_centered_frac_mean") is None and keys.check_key("init.grad_absdev_mean") is None


def test_final_keys_take_a_statistic_from_the_latest_epoch_that_measured_it():
    # unit statistics every 10 epochs of a 15-epoch run: the old result took epoch 15 alone and lost them
    unit = [{"block": "blocks.1", "metric": "dead_frac", "value": v} for v in (0.2,)]
    measured = {0: {"probes": [{**unit[0], "value": 0.0}]}, 10: {"probes": unit},
                15: {"spectrum": {"lambda_max": 7.0}, "probes": []}}
    final, earlier = keys.final_keys(measured)
    assert final["slq_lambda_max"] == 7.0 and final["dead_frac_mean"] == 0.2
    assert earlier == {"dead_frac_mean": 10}
    assert keys.final_keys({}) == ({}, {})


def test_a_finished_run_is_re_derived_from_its_files(tmp_path):
    # a run finished under an older definition (no centered overlap in result.json) gets today's keys
    from types import SimpleNamespace

    from landscape.experiment.runner import refresh_result
    from landscape.io import write_json, write_jsonl

    run = SimpleNamespace(cell="a", base="a", label="A", note="", setting={}, seed=0, target_acc=None)
    write_jsonl(tmp_path / "metrics.jsonl", [{"epoch": 1, "train_acc": 0.5, "train_loss": 1.0, "test_acc": 0.4,
                                              "test_loss": 1.2, "seconds": 2.0}])
    # an SLQ spectrum's summary: its masses and their quadrature brackets reach the final keys
    from landscape.hessian.solvers.spectrum import SpectralDensity

    sd = SpectralDensity(np.array([[1e-6, 0.5, 10.0]]), np.array([[0.8, 0.1, 0.1]]), dim=100)
    write_json(tmp_path / "measure" / "epoch001.json",
               {"spectrum": sd.summary(),
                "probes": [{"block": "blocks.1", "metric": "overlap_act_centered_frac", "value": 0.25}]})
    write_json(tmp_path / "result.json", {"status": "completed", "message": "", "epochs_trained": 1,
                                          "measured_epochs": [1], "final": {"train_acc": 0.5}, "init": {}})
    result = refresh_result(run, tmp_path)
    assert result["final"]["overlap_act_centered_frac_mean"] == 0.25 and result["final"]["test_acc"] == 0.4
    # mass below 1e-3·10 = 0.01: the node at 1e-6 (0.8) is in; the bracket allows 0 to 0.9 (the next node)
    assert result["final"]["slq_degenerate_ratio"] == 0.8
    assert (result["final"]["slq_degenerate_ratio_low"], result["final"]["slq_degenerate_ratio_high"]) == \
        pytest.approx((0.0, 0.9))
    assert (tmp_path / "result.json").read_text().count("overlap_act_centered_frac_mean") == 1


def stream(values, block="blocks.3", every=10):
    return [{"step": every * (i + 1), "block": b, "metric": "x_norm2", "value": v * (1 if b == block else 0.5)}
            for i, v in enumerate(values) for b in ("blocks.0", block)]


def test_transition_point_only_for_an_interior_peak():
    rising = stream([1.0, 2.0, 3.0, 4.0])
    # the old definition (argmax over steps) put the transition at the last step, where there is no peak
    assert keys.transition_point(rising) == {"step": 40, "value": 4.0, "interior": False, "block": "blocks.3"}
    assert keys.step_keys(rising) == {"transition_step": None, "x_norm2_peak": 4.0}
    assert keys.step_keys(stream([4.0, 3.0, 2.0]))["transition_step"] is None  # decaying from the start
    peaked = stream([1.0, 5.0, 3.0, 2.0])
    assert keys.step_keys(peaked) == {"transition_step": 20, "x_norm2_peak": 5.0}
    nan_last = stream([1.0, 5.0, 3.0, float("nan")])  # a diverged last record is not the peak
    assert keys.step_keys(nan_last)["transition_step"] == 20
    assert keys.step_keys([]) == {}


def test_transition_point_needs_a_rise_and_a_sustained_decay_over_the_declared_span():
    # 480 steps, a record every 10: the linear transformer's step-20 transient, then a slow plateau
    early = [1.0, 3.0, 2.0] + [1.5] * 45
    assert keys.step_keys(stream(early))["transition_step"] is None  # peak 10 steps in: within the first 10%
    # round 1's FC stream: rising over 960 steps with a noise dip in the last records (peak at step 940)
    late = [1.0 + i for i in range(94)] + [90.0, 91.0]
    assert keys.transition_point(stream(late))["step"] == 940
    assert keys.step_keys(stream(late))["transition_step"] is None  # 20 steps before the end: no decay span
    # an interior peak whose "decay" is noise: the last 10% stay within 10% of the peak
    flat = [1.0] * 10 + [10.0] * 10 + [10.5] + [9.8] * 29
    assert keys.step_keys(stream(flat))["transition_step"] is None
    # a real transition: rise over 40% of the run, decay to half the peak over the rest
    real = [1.0 + i for i in range(20)] + [20.0 - 0.4 * i for i in range(30)]
    assert keys.step_keys(stream(real))["transition_step"] == 200
    assert keys.TRANSITION_SPAN == 0.1 and keys.TRANSITION_CHANGE == 0.1  # the declared definition


def test_a_non_finite_ratio_is_a_failure_not_a_gap():
    # a block whose gradient overflowed (inf) or vanished (0, or NaN = 0/0) is the worst block, not a missing one
    healthy = keys.norm_preservation(ratios({f"blocks.{i}": 1.1 for i in range(4)}))
    broken = keys.norm_preservation(ratios({"blocks.0": 1.1, "blocks.1": float("inf"), "blocks.2": 0.0,
                                            "blocks.3": float("nan")}))
    assert broken["n_failed_blocks"] == 3 and healthy["n_failed_blocks"] == 0
    assert broken["grad_dev_max"] == keys.FAILED_DEV
    assert broken["grad_absdev_mean"] == pytest.approx((math.log10(1.1) + 3 * keys.FAILED_DEV) / 4)
    assert broken["grad_absdev_mean"] > healthy["grad_absdev_mean"]  # the old key dropped them: 0.041 < healthy's
    assert broken["grad_ratio_min"] == broken["grad_ratio_max"] == 1.1  # the ratio range is over finite blocks
    null = keys.probe_keys([{"block": "blocks.1", "metric": "grad_ratio", "value": None}])
    assert null["n_failed_blocks"] == 1  # the run files' null (a non-finite value) fails too


RAW = {"name": "c", "cells": {"a": {"model_config": {"kind": "residual"}}, "b": {"model_config": {"kind": "plain"}}},
       "profiles": {"quick": {"model_config": {"depth": 2, "width": 4}, "train": {"epochs": 1}},
                    "other": {"model_config": {"depth": 2, "width": 4}, "train": {"epochs": 1},
                              "cells": {"a": {"skip": True}}}},
       "claims": {"faster": {"text": "residual trains better", "metric": "train_acc", "cells": ["a", "b"],
                             "direction": "greater", "secondary": ["test_acc", "init.grad_gain"]}}}


def test_claims_are_declared_validated_and_resolved_per_profile():
    exp = config.resolve(RAW, "quick")
    assert exp.claims == [{"name": "faster", "text": "residual trains better", "metric": "train_acc",
                           "cells": ["a", "b"], "direction": "greater", "secondary": ["test_acc", "init.grad_gain"]}]
    assert config.resolve(RAW, "other").claims == []  # the profile does not run cell a: not its claim
    assert exp.record()["claims"] == exp.claims
    bad = [({"direction": "up"}, "direction must be"), ({"metric": "train_accuracy"}, "unknown result key"),
           ({"cells": ["a"]}, "two different cells"), ({"secondary": ["nope"]}, "unknown result key 'nope'"),
           ({"profiles": ["other"]}, "profile 'other' has no cell(s) ['a']"), ({"typo": 1}, "unknown key(s)")]
    for change, message in bad:
        raw = {**RAW, "claims": {"faster": {**RAW["claims"]["faster"], **change}}}
        with pytest.raises(LandscapeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            config.resolve(raw, "other" if "profiles" in change else "quick")


def fake_summary(a: list, b: list, key: str = "train_acc") -> dict:
    def row(name, values):
        return {"cell": name, "seeds": list(range(len(values))),
                "final": {key: summary.seed_stats(values)}, "init": {}}
    return {"cells": [row("a", a), row("b", b)]}


def test_claim_paired_difference_interval_and_verdict_match_scipy():
    a, b = [0.80, 0.85, 0.83, 0.90, 0.86], [0.75, 0.78, 0.80, 0.84, 0.85]
    s = fake_summary(a, b)
    claim = {"name": "x", "text": "t", "metric": "train_acc", "cells": ["a", "b"], "direction": "greater",
             "secondary": []}
    got = summary.evaluate_claim(s, claim)
    d = np.subtract(a, b)
    lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    p = got["primary"]
    assert p["diff"] == pytest.approx(d.mean()) and p["sd"] == pytest.approx(d.std(ddof=1)) and p["n"] == 5
    assert (p["low"], p["high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert p["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert lo > 0 and got["verdict"] == "agrees"
    assert summary.evaluate_claim(s, {**claim, "direction": "less"})["verdict"] == "disagrees"
    noisy = fake_summary([0.8, 0.7, 0.9], [0.75, 0.8, 0.82])  # differences of both signs
    assert summary.evaluate_claim(noisy, claim)["verdict"] == "inconclusive"
    one = fake_summary([0.9], [0.1])  # one seed: no interval, so no verdict either way
    assert summary.evaluate_claim(one, claim)["verdict"] == "inconclusive"
    # seeds are paired by seed number; a diverged seed (None) drops out of the pairs
    s = fake_summary([0.9, None, 0.8], [0.5, 0.6, 0.4])
    assert summary.evaluate_claim(s, claim)["primary"]["n"] == 2
    table = summary.claims_table([got])
    assert "| t | train_acc | a − b |" in table and "| 5 |" in table and "agrees" in table


def test_seed_stats_sample_sd_and_t_interval():
    v = [1.0, 2.0, 4.0, None]
    s = summary.seed_stats(v)
    assert s["n"] == 3 and s["std"] == pytest.approx(np.std([1, 2, 4], ddof=1)) and s["values"] == v
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean([1, 2, 4]), scale=sps.sem([1, 2, 4]))
    assert (s["low"], s["high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert summary.seed_stats([3.0])["std"] is None and summary.seed_stats([None])["mean"] is None


def test_spectrum_curves_integrate_to_the_spectral_masses():
    from landscape.experiment.results import spectrum_curves

    rng = np.random.default_rng(0)
    nodes = np.sort(np.concatenate([rng.normal(0, 1e-5, (3, 8)), rng.uniform(0.1, 10, (3, 4)),
                                    -rng.uniform(0.05, 0.5, (3, 2))], axis=1), axis=1)
    w = rng.random(nodes.shape)
    w /= w.sum(axis=1, keepdims=True)
    c = spectrum_curves({"nodes": nodes, "weights": w, "dim": 100, "eps": 1e-3})
    # the linear view integrates to 1 on its grid (σ at least 1.5 grid steps: no node falls between points)
    assert np.trapezoid(c["density"], c["grid"]) == pytest.approx(1.0, abs=0.01)
    # the log view: each part integrates to the mass of that sign above the floor 1e-6 λmax
    floor = 1e-6 * nodes.max()
    pos_mass = (w * (nodes > floor)).sum(axis=1).mean()
    neg_mass = (w * (nodes < -floor)).sum(axis=1).mean()
    assert np.trapezoid(c["log_positive"], c["log_grid"]) == pytest.approx(pos_mass, abs=0.01)
    assert np.trapezoid(c["log_negative"], c["log_grid"]) == pytest.approx(neg_mass, abs=0.01)
    # the legend's masses are at the reported threshold ε λmax, computed directly here
    assert c["negative_ratio"] == pytest.approx((w * (nodes < -1e-3 * nodes.max())).sum(axis=1).mean())
    assert c["degenerate_ratio"] == pytest.approx((w * (np.abs(nodes) < 1e-3 * nodes.max())).sum(axis=1).mean())
    assert c["eps"] == 1e-3


def test_published_numbers_sit_beside_the_grid_and_are_validated():
    pub = {"a": 0.9061, "b": 0.8982, "source": "the paper's table", "setup": "ViT-S on CIFAR-10"}
    raw = {**RAW, "claims": {"faster": {**RAW["claims"]["faster"], "published": pub}}}
    claim = config.resolve(raw, "quick").claims[0]
    assert claim["published"] == pub
    got = summary.evaluate_claim(fake_summary([0.8, 0.85, 0.83], [0.75, 0.78, 0.80]), claim)
    table = summary.papers_table([got])
    assert "| 0.906 vs 0.898 (0.0079) |" in table and "the paper's table; ViT-S on CIFAR-10" in table
    assert summary.papers_table([{**got, "published": None}]) == ""
    bad = {**raw, "claims": {"faster": {**raw["claims"]["faster"], "published": {"a": 1.0, "b": 0.5}}}}
    with pytest.raises(LandscapeError, match="published: missing required key 'source'"):
        config.resolve(bad, "quick")


def test_transition_blocks_from_roles_and_shapes():
    import torch
    from torch import nn

    from landscape.experiment.measure import transition_blocks
    from landscape.models import build

    fc = build("fc", {"kind": "residual", "depth": 4, "width": 8, "in_dim": 40, "n_classes": 10})
    names = [f"blocks.{i}" for i in range(4)]
    assert transition_blocks(fc, torch.randn(2, 40), names) == ["blocks.0"]  # the 40 -> 8 input block

    class Net(nn.Module):  # a third-party model without `blocks`: found by shape
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 5), nn.Linear(5, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    assert transition_blocks(Net(), torch.randn(2, 5), ["a", "b", "c"]) == ["b"]


def test_a_confirm_profile_extends_quick_and_keeps_only_some_cells():
    raw = {**RAW, "profiles": {**RAW["profiles"], "confirm": {"extends": "quick", "seeds": [5, 6], "only": ["a*"]}}}
    exp = config.resolve(raw, "confirm")
    assert {(r.cell, r.seed) for r in exp.runs} == {("a", 5), ("a", 6)}
    assert exp.runs[0].train.model_config == {"kind": "residual", "depth": 2, "width": 4}  # the quick profile's
    assert exp.claims == []  # b is not run here, so the claim is not judged on this profile
    for change, message in (({"only": ["zz"]}, "match no cell"), ({"extends": "confirm"}, "not another profile")):
        bad = {**raw, "profiles": {**raw["profiles"], "confirm": {**raw["profiles"]["confirm"], **change}}}
        with pytest.raises(LandscapeError, match=message):
            config.resolve(bad, "confirm")


def test_claim_provenance_is_validated_and_carried():
    prov = {"declared": "8f9009c", "first_run": "2026-12-07", "order": "after", "scale": "log",
            "previous": {"verdict": "agrees", "seeds": [0, 1, 2], "source": "RESULTS.md"}}
    raw = {**RAW, "claims": {"faster": {**RAW["claims"]["faster"], **prov}}}
    claim = config.resolve(raw, "quick").claims[0]
    assert {k: claim[k] for k in prov} == prov
    for change, message in (({"order": "later"}, "order must be"), ({"scale": "logit"}, "scale must be"),
                            ({"previous": {"verdict": "maybe", "source": "s"}}, "previous.verdict"),
                            ({"previous": {"verdict": "agrees"}}, "missing required key 'source'")):
        bad = {**RAW, "claims": {"faster": {**RAW["claims"]["faster"], **change}}}
        with pytest.raises(LandscapeError, match=message):
            config.resolve(bad, "quick")
