"""Seed statistics and the one verdict rule every claim uses (docs/methods.md §H).

One convention throughout: the spread of n seeds is the SAMPLE standard deviation (ddof = 1);
with fewer than two finite values it is NaN. Non-finite values (a diverged run's NaN, JSON null)
are dropped and the count that remains is reported as n.

    mean_sd(v)                 (mean, sd, n)
    t_ci(v)                    mean ± t_{n−1, (1+level)/2} · sd/√n           (Student t interval)
    bootstrap_ci(v)            percentile interval of the mean over `resamples` resamples
    paired(a, b)               d_i = a_i − b_i over seeds present in both: mean, sd, n, interval of
                               the mean difference, and the two-sided paired t-test p-value
                               p = 2·(1 − F_{t,n−1}(|d̄| / (sd/√n)))
    verdict(ci, direction)     "agrees" when the whole interval lies on the predicted side of the null
                               value (strictly), "disagrees" when it lies wholly on the other side,
                               otherwise (or with no interval) "inconclusive"
    compare(a, b, direction)   paired(a, b) plus its verdict, as one JSON-able dict (a claim's row)
    spearman(x, y)             rank correlation with a Fisher-z interval, SE = √(1.06/(n−3))
                               (Fieller, Hartley & Pearson 1957), and its t-approximation p-value

Multiplicity and power (docs/methods.md §H.2, §H.3):

    holm(p)                    Holm's step-down adjusted p-values (Holm 1979): sort the m p-values
                               p_(1) ≤ … ≤ p_(m), p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))
    mde_paired(sd, n)          the smallest true mean difference a two-sided paired t-test at level α
                               detects with probability `power` (default 0.05, 0.8), exactly from the
                               noncentral t: P(|T'| > t_{1−α/2, n−1}) = power, T' ~ t_{n−1}(δ√n/sd)

Intervals of the right shape (docs/methods.md §H.4):

    log_ci(v)                  positive quantities (ratios, gains): t interval of mean log v, exponentiated:
                               the geometric mean and a interval inside (0, ∞)
    paired_log(a, b)           the ratio a/b paired by seed: `paired` on log a − log b (exponentiate it)
    logit_ci(v)                fractions in [0, 1]: t interval of the mean logit, back-transformed, inside
                               (0, 1); 0 and 1 are moved in by `eps` first
    wilson_ci(k, n)            k successes of n: Wilson's score interval (Wilson 1927), inside [0, 1]
    clip_interval(i, lo, hi)   an interval intersected with the parameter's range (a difference of two
                               fractions lies in [−1, 1])

Everything returns plain floats (NaN where undefined), so results JSON-encode with landscape.io.
"""
from landscape.stats.correlation import spearman
from landscape.stats.intervals import (
    Interval,
    Paired,
    bootstrap_ci,
    ci,
    finite,
    mean_sd,
    paired,
    summarize,
    t_ci,
    t_quantile,
)
from landscape.stats.shaped_intervals import clip_interval, log_ci, logit_ci, paired_log, wilson_ci
from landscape.stats.verdicts import VERDICTS, compare, holm, mde_paired, paired_t_power, verdict

__all__ = ["VERDICTS", "Interval", "Paired", "bootstrap_ci", "ci", "clip_interval", "compare", "finite", "holm",
           "log_ci", "logit_ci", "mde_paired", "mean_sd", "paired", "paired_log", "paired_t_power", "spearman",
           "summarize", "t_ci", "t_quantile", "verdict", "wilson_ci"]
