"""landscape.experiment.verdicts and .tables on constructed claims: the paired test on the right scale, Holm
within a family against a hand computation, the MDE's "underpowered", the data a post hoc claim is judged on,
and the old verdict recomputed on the old seeds."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from landscape.experiment import tables, verdicts


def summary(cells: dict[str, dict[str, list]], seeds=(0, 1, 2, 3, 4)) -> dict:
    """A summary.json with cells {name: {key: per-seed values}}."""
    rows = [{"cell": c, "seeds": list(seeds), "final": {k: {"values": v} for k, v in keys.items()}, "init": {}}
            for c, keys in cells.items()]
    return {"cells": rows}


def claim(metric="train_acc", direction="greater", **kw) -> dict:
    return {"name": "c", "text": "a beats b", "metric": metric, "cells": ["a", "b"], "direction": direction, **kw}


def test_a_ratio_is_tested_on_the_log_scale_and_reported_as_a_factor():
    a, b = [2.0, 8.0, 4.0, 3.0, 5.0], [1.0, 2.0, 2.0, 1.0, 2.0]
    t = verdicts.claim_test(summary({"a": {"grad_gain": a}, "b": {"grad_gain": b}}), claim("grad_gain"))
    logs = [math.log(x / y) for x, y in zip(a, b)]
    ref = sps.ttest_rel([math.log(x) for x in a], [math.log(y) for y in b])
    half = sps.t.ppf(0.975, 4) * sps.tstd(logs) / math.sqrt(5)
    assert t["scale"] == "log" and t["estimate"] == pytest.approx(math.exp(sum(logs) / 5))
    assert (t["low"], t["high"]) == pytest.approx((math.exp(sum(logs) / 5 - half), math.exp(sum(logs) / 5 + half)))
    assert t["p"] == pytest.approx(ref.pvalue) and t["low"] > 0
    assert tables.estimate_text(t).startswith("×")


def test_a_difference_of_fractions_stays_in_minus_one_one():
    a, b = [1.0, 1.0, 0.2, 1.0, 1.0], [0.0, 0.1, 0.2, 0.0, 0.0]
    t = verdicts.claim_test(summary({"a": {"train_acc": a}, "b": {"train_acc": b}}), claim())
    assert t["scale"] == "fraction" and t["high"] <= 1.0 and t["low"] > -1.0


def test_holm_within_a_family_and_the_adjusted_verdict():
    # three claims with p = 0.01, 0.04, 0.03: Holm 0.03, 0.06, 0.06 -> agrees, inconclusive, inconclusive
    rows = [{"test": {"p": p, "test_mean": m, "mde_test": 0.01, "verdict": "agrees"}, "direction": "greater",
             "effect": None} for p, m in ((0.01, 0.2), (0.04, 0.2), (0.03, -0.2))]
    out = verdicts.holm_family(rows)
    assert [r["p_holm"] for r in out] == pytest.approx([0.03, 0.06, 0.06])
    assert [r["verdict"] for r in out] == ["agrees", "inconclusive", "inconclusive"] and out[0]["m"] == 3
    rows[2]["test"]["p"] = 0.001  # now significant the wrong way
    assert verdicts.holm_family(rows)[2]["verdict"] == "disagrees"


def test_an_mde_above_the_papers_effect_is_underpowered():
    test = {"p": 0.001, "test_mean": -0.03, "mde_test": 0.032}
    assert verdicts.adjusted_verdict(test, 0.004, "greater", effect=0.0079) == "underpowered"
    assert verdicts.adjusted_verdict(test, 0.004, "greater", effect=0.1) == "disagrees"
    assert verdicts.adjusted_verdict(test, 0.004, "greater", effect=None) == "disagrees"
    pub = claim(published={"a": 0.9061, "b": 0.8982, "source": "s", "setup": "u"})
    assert verdicts.published_effect(pub, "linear") == pytest.approx(0.0079)
    assert verdicts.published_effect(pub, "log") == pytest.approx(math.log(0.9061 / 0.8982))


class FakeStore:
    """`Store`'s interface over constructed summaries: quick seeds 0-4 and confirm seeds 5-9."""

    def __init__(self, quick, confirm=None):
        self.summaries = {"quick": quick, "confirm": confirm}

    def has(self, grid, profile="quick"):
        return self.summaries.get(profile) is not None

    def summary(self, grid, profile="quick"):
        return self.summaries[profile]


def test_a_post_hoc_claim_is_judged_on_fresh_seeds_and_the_old_verdict_on_the_old_ones():
    quick = summary({"a": {"train_acc": [0.5, 0.52, 0.51, 0.53, 0.5]}, "b": {"train_acc": [0.4, 0.41, 0.4, 0.42, 0.4]}})
    fresh = summary({"a": {"train_acc": [0.4, 0.45, 0.38, 0.5, 0.41]},
                     "b": {"train_acc": [0.41, 0.4, 0.42, 0.4, 0.45]}}, seeds=(5, 6, 7, 8, 9))
    post = claim(order="after", previous={"verdict": "agrees", "source": "s", "seeds": [0, 1, 2]})
    row = verdicts.judge_claim(FakeStore(quick, fresh), "g", post, "paper")
    assert row["status"] == "confirmatory" and row["profile"] == "confirm" and row["test"]["seeds"] == [5, 6, 7, 8, 9]
    assert row["exploratory"]["seeds"] == [0, 1, 2, 3, 4] and row["exploratory"]["verdict"] == "agrees"
    assert row["previous"]["test"]["n"] == 3 and row["previous"]["test"]["verdict"] == "agrees"
    assert row["test"]["verdict"] == "inconclusive"
    alone = verdicts.judge_claim(FakeStore(quick), "g", post, "paper")  # no fresh seeds yet: exploratory
    assert alone["status"] == "exploratory" and alone["profile"] == "quick"
    before = verdicts.judge_claim(FakeStore(quick, fresh), "g", claim(), "paper")
    assert before["status"] == "confirmatory" and before["profile"] == "quick"
    judged = verdicts.holm_family([row])
    text = tables.changed_table(judged)
    assert "re-tested on fresh seeds 5-9" in text and "**agrees**" in text and "**inconclusive**" in text
    assert "exploratory seeds 0-4" in tables.provenance_table(judged)
