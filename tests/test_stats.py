"""landscape.stats against scipy.stats: sample SD, t intervals, the paired t-test, the bootstrap,
Spearman's rho, and the verdict rule on intervals placed on each side of the null value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from landscape import stats
from landscape.errors import LandscapeError


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mean_sd_is_the_sample_sd_and_drops_non_finite_values():
    v = [1.0, 2.0, 4.0, None, float("nan"), 7.0]
    mean, sd, n = stats.mean_sd(v)
    ref = np.array([1.0, 2.0, 4.0, 7.0])
    assert n == 4 and mean == pytest.approx(ref.mean())
    assert sd == pytest.approx(np.std(ref, ddof=1)) and sd != pytest.approx(np.std(ref))
    assert math.isnan(stats.mean_sd([3.0])[1]) and math.isnan(stats.mean_sd([])[0])


@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_t_interval_matches_scipy(rng, n, level):
    v = rng.normal(1.0, 2.0, n)
    got = stats.t_ci(v, level)
    lo, hi = ss.t.interval(level, n - 1, loc=v.mean(), scale=ss.sem(v))
    assert (got.low, got.high) == pytest.approx((lo, hi), rel=1e-12)
    assert got.estimate == pytest.approx(v.mean()) and got.n == n
    assert not stats.t_ci([1.0]).defined


@pytest.mark.parametrize("n", [3, 5, 8])
def test_paired_difference_matches_scipy_ttest_rel(rng, n):
    a = rng.normal(0.5, 1.0, n)
    b = a - rng.normal(0.3, 0.5, n)
    got = stats.paired(a, b)
    ref = ss.ttest_rel(a, b)
    assert got.t == pytest.approx(ref.statistic, rel=1e-10)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (got.ci.low, got.ci.high) == pytest.approx((lo, hi), rel=1e-10)
    assert got.sd == pytest.approx(np.std(a - b, ddof=1))


def test_paired_aligns_dicts_by_seed_and_drops_missing_pairs():
    a = {0: 1.0, 1: 2.0, 2: None, 3: 5.0}
    b = {3: 4.0, 1: 1.5, 0: 0.0, 7: 9.0}
    got = stats.paired(a, b)
    assert got.n == 3 and got.mean == pytest.approx(np.mean([1.0, 0.5, 1.0]))
    with pytest.raises(LandscapeError, match="length"):
        stats.paired([1.0, 2.0], [1.0])


def test_paired_with_constant_differences():
    assert stats.paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).p == 0.0
    assert stats.paired([2.0, 3.0], [2.0, 3.0]).p == 1.0


def test_bootstrap_interval_converges_to_scipy_percentile_bootstrap(rng):
    v = rng.exponential(1.0, 30)
    got = stats.bootstrap_ci(v, resamples=40_000, seed=1)
    ref = ss.bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=40_000, method="percentile",
                       random_state=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert got.low == pytest.approx(ref.low, abs=0.03 * width)
    assert got.high == pytest.approx(ref.high, abs=0.03 * width)
    assert stats.bootstrap_ci(v, seed=3) == stats.bootstrap_ci(v, seed=3)


def test_t_interval_covers_the_true_mean_at_its_level(rng):
    """Coverage over 4,000 simulated 5-seed experiments: 95% ± 3 binomial SEs (the SD convention matters:
    the population SD would under-cover at n = 5)."""
    draws = rng.normal(0.0, 1.0, (4000, 5))
    covered = np.mean([(lambda c: c.low < 0 < c.high)(stats.t_ci(d)) for d in draws])
    assert abs(covered - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 4000)


@pytest.mark.parametrize(
    "interval, direction, expect",
    [
        ((0.1, 0.5), ">", "agrees"),
        ((0.1, 0.5), "<", "disagrees"),
        ((-0.5, -0.1), "less", "agrees"),
        ((-0.5, -0.1), "greater", "disagrees"),
        ((-0.1, 0.5), ">", "inconclusive"),
        ((0.0, 0.5), ">", "inconclusive"),  # touching the null is not "wholly on one side"
        ((float("nan"), 0.5), ">", "inconclusive"),
        ((None, None), "<", "inconclusive"),
    ],
)
def test_verdict_rule(interval, direction, expect):
    assert stats.verdict(interval, direction) == expect


def test_verdict_with_a_null_value_and_intervals():
    assert stats.verdict((0.2, 0.3), ">", null=0.25) == "inconclusive"
    assert stats.verdict(stats.t_ci([1.0, 1.1, 0.9, 1.05, 0.95]), ">", null=0.5) == "agrees"
    # the Oh et al. case in issue 12: +4.1 / -1.0 / +2.8 pp is inconclusive at n = 3
    assert stats.verdict(stats.paired([4.1, -1.0, 2.8], [0.0, 0.0, 0.0]).ci, ">") == "inconclusive"
    with pytest.raises(LandscapeError, match="direction"):
        stats.verdict((0, 1), "up")
    with pytest.raises(LandscapeError, match="order"):
        stats.verdict((1, 0), ">")


def test_spearman_matches_scipy_with_ties(rng):
    x = rng.integers(0, 6, 25).astype(float)
    y = x + rng.normal(0, 2.0, 25)
    got = stats.spearman(x, y)
    ref = ss.spearmanr(x, y)
    assert got["rho"] == pytest.approx(ref.statistic, rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    z, se = np.arctanh(ref.statistic), math.sqrt(1.06 / 22)
    assert (got["low"], got["high"]) == pytest.approx((np.tanh(z - 1.959963984540054 * se),
                                                       np.tanh(z + 1.959963984540054 * se)))
    assert got["n"] == 25


def test_spearman_drops_non_finite_pairs_and_small_samples():
    got = stats.spearman([1, 2, None, 4, 5], [2, 1, 3, float("nan"), 6])
    assert got["n"] == 3 and math.isnan(got["low"])
    assert math.isnan(stats.spearman([1, 2], [2, 1])["rho"])


def test_summarize_reports_sample_sd_and_t_interval():
    s = stats.summarize(iter([1.0, 2.0, 3.0]))
    assert s["sd"] == pytest.approx(1.0) and s["n"] == 3
    assert (s["low"], s["high"]) == pytest.approx(ss.t.interval(0.95, 2, loc=2.0, scale=1 / math.sqrt(3)))


def test_compare_is_paired_plus_verdict():
    a, b = [0.80, 0.82, 0.79, 0.85, 0.81], [0.70, 0.74, 0.71, 0.72, 0.69]
    got = stats.compare(a, b, ">")
    ref = ss.ttest_rel(a, b)
    assert got["verdict"] == "agrees" and got["n"] == 5 and got["direction"] == "greater"
    assert got["p"] == pytest.approx(ref.pvalue) and got["low"] > 0
    assert stats.compare(a, b, "<")["verdict"] == "disagrees"
    assert stats.compare(a, b, ">", null=0.5)["verdict"] == "disagrees"
    assert stats.compare(a, b, ">", method="bootstrap")["method"] == "bootstrap"


# ---- multiplicity, power, interval shapes (docs/methods.md §H.2-H.4) ----

def test_holm_against_a_hand_computation_and_the_textbook_example():
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Holm (1979)-style example as statsmodels' multipletests(method="holm") gives it
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    assert stats.holm(p) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == [] and stats.holm([0.03]) == [0.03]  # one test: no correction
    out = stats.holm([0.01, float("nan"), 0.02])  # an undefined test counts in m and stays undefined
    assert out[0] == pytest.approx(0.03) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    with pytest.raises(LandscapeError):
        stats.holm([1.5])


def test_holm_controls_the_familywise_error_under_the_null(rng):
    # 10 independent true nulls: any p_holm < 0.05 iff min p < 0.005, probability 1 - 0.995^10 = 0.049 <= 0.05
    p = rng.uniform(size=(4000, 10))
    hits = np.mean([min(stats.holm(row)) < 0.05 for row in p])
    assert hits == pytest.approx(1 - 0.995**10, abs=0.012)  # 3.5 standard errors of 4000 families
    assert np.mean(p.min(1) < 0.05) > 0.35  # uncorrected: 40% of families "find" something


def test_mde_reaches_the_asked_power_by_simulation(rng):
    sd, n = 0.02, 5
    mde = stats.mde_paired(sd, n)
    assert stats.paired_t_power(mde, sd, n) == pytest.approx(0.8, abs=1e-9)
    d = rng.normal(mde, sd, size=(20000, n))  # paired differences with the MDE as their true mean
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > ss.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.015)
    # large n: the normal formula (z_{0.975} + z_{0.8}) sd / sqrt(n)
    assert stats.mde_paired(1.0, 4000) * math.sqrt(4000) == pytest.approx(1.95996 + 0.84162, rel=2e-3)
    assert mde / (2.80158 * sd / math.sqrt(n)) == pytest.approx(1.34, abs=0.02)  # t at n = 5 costs 34%
    assert math.isnan(stats.mde_paired(0.0, 5)) and math.isnan(stats.mde_paired(1.0, 1))
    assert stats.mde_paired(1.0, 2) > stats.mde_paired(1.0, 3) > stats.mde_paired(1.0, 5)


def test_log_intervals_of_ratios_stay_positive():
    # a gain that spans decades: the linear t interval goes below 0, the log one cannot
    gains = [0.5, 2.0, 40.0]
    assert stats.t_ci(gains).low < 0
    i = stats.log_ci(gains)
    assert i.low > 0 and i.estimate == pytest.approx((0.5 * 2 * 40) ** (1 / 3)) and i.method == "log-t"
    logs = np.log(gains)
    half = ss.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert (i.low, i.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    r = stats.paired_log({0: 4.0, 1: 9.0, 2: 1.0}, {0: 2.0, 1: 3.0, 2: 1.0})  # ratios 2, 3, 1
    assert math.exp(r.mean) == pytest.approx(6 ** (1 / 3)) and math.exp(r.ci.low) > 0
    with pytest.raises(LandscapeError, match="positive"):
        stats.log_ci([1.0, -2.0])


def test_fraction_intervals_stay_inside_zero_one():
    # mostly-zero fractions: the linear t interval goes below 0 (the issue's [-0.25, 0.91]); logit and Wilson do not
    fr = [0.0, 0.0, 0.5, 0.0, 0.9]
    assert stats.t_ci(fr).low < 0
    li = stats.logit_ci(fr)
    assert 0 < li.low < li.estimate < li.high < 1 and li.method == "logit-t"
    w = stats.wilson_ci(0, 10)
    assert w.low == 0.0 and w.high == pytest.approx(0.2775, abs=1e-4)  # the textbook 0/10 upper bound
    w = stats.wilson_ci(7, 10)  # by hand: (0.7 + 1.92/10) / 1.384 ± ...
    z = 1.959964
    centre = (0.7 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.21 / 10 + z * z / 400) / (1 + z * z / 10)
    assert (w.low, w.high) == pytest.approx((centre - half, centre + half))
    clipped = stats.clip_interval(stats.Interval(0.9, 0.7, 1.1), -1.0, 1.0)
    assert (clipped.low, clipped.high) == (0.7, 1.0)
    with pytest.raises(LandscapeError):
        stats.logit_ci([1.2])
