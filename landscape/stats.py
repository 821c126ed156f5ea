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

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from landscape.errors import LandscapeError

VERDICTS = ("agrees", "disagrees", "inconclusive")
_DIRECTIONS = {">": 1, "greater": 1, "higher": 1, "increase": 1, "+": 1, 1: 1,
               "<": -1, "less": -1, "lower": -1, "decrease": -1, "-": -1, -1: -1}


@dataclass(frozen=True)
class Interval:
    """A confidence interval for `estimate` (low ≤ high; NaN bounds when it cannot be formed)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = "t"
    n: int = 0

    def as_dict(self) -> dict:
        """The interval as a plain dict (estimate, low, high, level, method, n)."""
        return asdict(self)

    @property
    def defined(self) -> bool:
        """True when both bounds are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)


@dataclass(frozen=True)
class Paired:
    """Paired difference a − b over seeds: mean, sample sd, n, interval, paired t-test p-value."""

    mean: float
    sd: float
    n: int
    ci: Interval
    t: float
    p: float

    def as_dict(self) -> dict:
        """The paired comparison as a plain dict, its interval nested under "ci"."""
        out = asdict(self)
        out["ci"] = self.ci.as_dict()
        return out


def finite(values: Iterable) -> np.ndarray:
    """The finite entries of `values` as float64 (None and NaN/inf dropped).

    Args:
        values: numbers or None.

    Returns:
        The finite values.
    """
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def mean_sd(values: Iterable) -> tuple[float, float, int]:
    """(mean, sample sd with ddof = 1, n) of the finite values; sd is NaN for n < 2, mean NaN for n = 0.

    Args:
        values: numbers or None.

    Returns:
        (mean, sd, n).
    """
    v = finite(values)
    n = v.size
    mean = float(v.mean()) if n else math.nan
    sd = float(v.std(ddof=1)) if n >= 2 else math.nan
    return mean, sd, n


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise LandscapeError(f"confidence level must lie in (0, 1), got {level}")


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with df degrees of freedom.

    Args:
        q: the probability.
        df: the degrees of freedom.

    Returns:
        t_{df, q}.
    """
    return float(special.stdtrit(df, q))


def t_ci(values: Iterable, level: float = 0.95) -> Interval:
    """Student-t interval of the mean: x̄ ± t_{n−1,(1+level)/2} · sd/√n (NaN bounds for n < 2).

    Args:
        values: numbers (non-finite ones dropped).
        level: the coverage.

    Returns:
        The interval.
    """
    _check_level(level)
    mean, sd, n = mean_sd(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, level, "t", n)
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, "t", n)


def bootstrap_ci(values: Iterable, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean: one [resamples, n] index draw, row means, quantiles.

    With very few seeds (n ≤ 5) the percentile bootstrap under-covers; prefer `t_ci` there.

    Args:
        values: numbers (non-finite ones dropped).
        level: the coverage.
        resamples: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        The interval.
    """
    _check_level(level)
    v = finite(values)
    n = v.size
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, level, "bootstrap", n)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(int(resamples), n))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean, float(lo), float(hi), level, "bootstrap", n)


def ci(values: Iterable, level: float = 0.95, method: str = "t", **kw) -> Interval:
    """`t_ci` or `bootstrap_ci` by name.

    Args:
        values: numbers.
        level: the coverage.
        method: "t" or "bootstrap".
        **kw: options of `bootstrap_ci`.

    Returns:
        The interval.
    """
    if method == "t":
        return t_ci(values, level)
    if method == "bootstrap":
        return bootstrap_ci(values, level, **kw)
    raise LandscapeError(f"unknown interval method {method!r}; use 't' or 'bootstrap'")


def _pairs(a, b) -> np.ndarray:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in a if k in b]
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    a = np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    if a.shape != b.shape:
        raise LandscapeError(f"paired: the two samples differ in length ({a.size} vs {b.size})")
    d = a - b
    return d[np.isfinite(d)]


def paired(a, b, level: float = 0.95, method: str = "t", **kw) -> Paired:
    """Paired difference a − b: sequences aligned by position, or dicts {seed: value} aligned by key.

    Pairs with a non-finite member are dropped. p is the two-sided paired t-test p-value
    (NaN for n < 2; 0 when every difference is equal and nonzero, 1 when all are zero).

    Args:
        a: the first values (a sequence, or {seed: value}).
        b: the second values.
        level: the coverage.
        method: "t" or "bootstrap".
        **kw: options of `bootstrap_ci`.

    Returns:
        The `Paired` result (mean, sd, n, interval, t, p).
    """
    d = _pairs(a, b)
    mean, sd, n = mean_sd(d)
    interval = ci(d, level, method, **kw)
    if n < 2:
        t, p = math.nan, math.nan
    elif sd == 0:
        t, p = (math.copysign(math.inf, mean), 0.0) if mean != 0 else (math.nan, 1.0)
    else:
        t = mean / (sd / math.sqrt(n))
        p = float(2 * special.stdtr(n - 1, -abs(t)))
    return Paired(mean, sd, n, interval, float(t), p)


def _sign(direction) -> int:
    key = direction.strip().lower() if isinstance(direction, str) else direction
    if key not in _DIRECTIONS:
        raise LandscapeError(f"verdict: direction must be '>' or '<' (greater / less), got {direction!r}")
    return _DIRECTIONS[key]


def verdict(interval: Interval | Sequence[float], direction, null: float = 0.0) -> str:
    """"agrees" | "disagrees" | "inconclusive" from an interval and the predicted side of `null`.

    direction ">" predicts the quantity is above `null` (e.g. a − b > 0), "<" below. The whole
    interval must lie strictly on one side; an interval touching or containing `null`, or one
    with a NaN bound, is inconclusive.

    Args:
        interval: an Interval or (low, high).
        direction: ">" / "greater" or "<" / "less".
        null: the reference value.

    Returns:
        The verdict.
    """
    sign = _sign(direction)
    if isinstance(interval, Interval):
        low, high = interval.low, interval.high
    else:
        low, high = interval
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if low > high:
        raise LandscapeError(f"verdict: interval bounds out of order ({low} > {high})")
    above, below = low > null, high < null
    if above or below:
        return "agrees" if (above if sign > 0 else below) else "disagrees"
    return "inconclusive"


def compare(a, b, direction, null: float = 0.0, level: float = 0.95, method: str = "t", **kw) -> dict:
    """A paired claim "a − b is `direction` `null`": {"mean", "sd", "n", "low", "high", "level", "method",
    "t", "p", "direction", "null", "verdict"} with the verdict taken from the interval.

    Args:
        a: the first values.
        b: the second values.
        direction: ">" / "greater" or "<" / "less".
        null: the reference value.
        level: the coverage.
        method: "t" or "bootstrap".
        **kw: options of `bootstrap_ci`.

    Returns:
        The comparison dict.
    """
    res = paired(a, b, level, method, **kw)
    return {"mean": res.mean, "sd": res.sd, "n": res.n, "low": res.ci.low, "high": res.ci.high, "level": level,
            "method": method, "t": res.t, "p": res.p, "direction": "greater" if _sign(direction) > 0 else "less",
            "null": null, "verdict": verdict(res.ci, direction, null)}


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 1-based, vectorized."""
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    first = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], v.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(v.size)
    ranks[order] = avg[group]
    return ranks


def spearman(x: Iterable, y: Iterable, level: float = 0.95) -> dict:
    """Spearman's ρ over pairs with both members finite: {"rho", "low", "high", "p", "n"}.

    Interval: tanh(atanh ρ ± z_{(1+level)/2} √(1.06/(n−3))) (NaN for n < 4); p from
    t = ρ √((n−2)/(1−ρ²)) with n − 2 degrees of freedom (scipy.stats.spearmanr's default).

    Args:
        x: the first values.
        y: the second, the same length.
        level: the coverage.

    Returns:
        The dict.
    """
    _check_level(level)
    x = np.array([np.nan if v is None else v for v in x], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
    if x.shape != y.shape:
        raise LandscapeError(f"spearman: x and y differ in length ({x.size} vs {y.size})")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out = {"rho": math.nan, "low": math.nan, "high": math.nan, "p": math.nan, "n": n, "level": level}
    if n < 3:
        return out
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx @ rx) * (ry @ ry))
    if denom == 0:
        return out
    rho = float(np.clip((rx @ ry) / denom, -1.0, 1.0))
    out["rho"] = rho
    if abs(rho) < 1:
        t = rho * math.sqrt((n - 2) / (1 - rho**2))
        out["p"] = float(2 * special.stdtr(n - 2, -abs(t)))
    else:
        out["p"] = 0.0
    if n > 3:
        z = float(special.ndtri((1 + level) / 2))
        half = z * math.sqrt(1.06 / (n - 3))
        zr = math.atanh(np.clip(rho, -1 + 1e-15, 1 - 1e-15))
        out["low"], out["high"] = math.tanh(zr - half), math.tanh(zr + half)
    return out


def summarize(values: Iterable, level: float = 0.95) -> dict:
    """{"mean", "sd", "n", "low", "high", "level", "method": "t"}: the one way a metric is reported.

    Args:
        values: numbers (non-finite ones dropped).
        level: the coverage.

    Returns:
        The dict.
    """
    v = finite(values)
    interval = t_ci(v, level)
    mean, sd, n = mean_sd(v)
    return {"mean": mean, "sd": sd, "n": n, "low": interval.low, "high": interval.high, "level": level,
            "method": "t"}


def holm(pvalues: Iterable) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979, "A simple sequentially rejective
    multiple test procedure"): with the m p-values sorted p_(1) ≤ … ≤ p_(m),
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)). Rejecting where p̃ < α controls the family-wise error rate
    at α under any dependence. A NaN p-value (a test that could not be made) counts in m, sorts last and stays
    NaN.

    Args:
        pvalues: the family's p-values.

    Returns:
        The adjusted p-values.
    """
    p = np.array([np.nan if v is None else v for v in pvalues], dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    if np.any((p < 0) | (p > 1)):
        raise LandscapeError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="mergesort")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(np.where(np.isnan(scaled), -np.inf, scaled))
    out = np.empty(m)
    out[order] = np.where(np.isnan(scaled), np.nan, adjusted)
    return [float(v) for v in out]


def paired_t_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level α with n pairs when the true mean difference is `delta`
    and the differences' SD is `sd`: P(|T'| > t_{1−α/2, n−1}), T' noncentral t with n − 1 degrees of freedom
    and noncentrality δ√n/sd.

    Args:
        delta: the true mean difference.
        sd: the differences' SD.
        n: the pairs.
        alpha: the level.

    Returns:
        The power (NaN for n < 2 or sd ≤ 0).
    """
    if n < 2 or not sd > 0:
        return math.nan
    crit = t_quantile(1 - alpha / 2, n - 1)
    nc = abs(delta) * math.sqrt(n) / sd
    lower = float(special.nctdtr(n - 1, nc, -crit))  # P(T' < −t): below Φ(−nc); scipy returns NaN where it underflows
    return (lower if math.isfinite(lower) else 0.0) + 1 - float(special.nctdtr(n - 1, nc, crit))


def mde_paired(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided paired t-test: the δ > 0 with `paired_t_power`(δ) = power.

    Args:
        sd: the sample SD of the paired differences (the observed one, used as the true one).
        n: the number of pairs.
        alpha: the test's level (two-sided).
        power: the detection probability asked for.

    Returns:
        δ in the units of the differences (NaN for n < 2 or sd not > 0). For large n it tends to the normal
        formula (z_{1−α/2} + z_power)·sd/√n; at n = 5 the t distribution makes it ≈ 1.6× larger.
    """
    if n < 2 or not (sd > 0 and math.isfinite(sd)):
        return math.nan
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise LandscapeError(f"mde_paired: need 0 < alpha < power < 1, got alpha {alpha}, power {power}")
    from scipy.optimize import brentq

    z = float(special.ndtri(1 - alpha / 2) + special.ndtri(power))
    lo, hi = 0.0, z * sd / math.sqrt(n)  # the normal formula: below the t answer
    while paired_t_power(hi, sd, n, alpha) < power:
        lo, hi = hi, 2 * hi
    return float(brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, lo, hi, xtol=1e-12 * sd))


def _positive(values: Iterable, what: str) -> np.ndarray:
    v = finite(values)
    if np.any(v <= 0):
        raise LandscapeError(f"{what}: a ratio or gain must be positive, got {v[v <= 0].tolist()}")
    return v


def log_ci(values: Iterable, level: float = 0.95) -> Interval:
    """Geometric mean of positive values with the Student-t interval of mean log v, exponentiated
    (method "log-t"): exp(mean log v ± t_{n−1} · sd(log v)/√n), always inside (0, ∞).

    Args:
        values: positive numbers (non-finite ones dropped).
        level: the coverage.

    Returns:
        The interval.
    """
    v = _positive(values, "log_ci")
    i = t_ci(np.log(v), level)
    return Interval(math.exp(i.estimate) if i.n else math.nan, math.exp(i.low) if i.defined else math.nan,
                    math.exp(i.high) if i.defined else math.nan, level, "log-t", i.n)


def paired_log(a, b, level: float = 0.95) -> Paired:
    """The ratio a/b paired by seed (sequences by position or {seed: value} dicts): `paired` on log a − log b.
    exp(mean), exp(ci.low), exp(ci.high) are the geometric-mean ratio and its interval; p tests ratio = 1.

    Args:
        a: the numerators (positive).
        b: the denominators (positive).
        level: the coverage.

    Returns:
        The `Paired` result on the log scale.
    """
    def logs(x):
        if isinstance(x, dict):
            return {k: _log_or_nan(v) for k, v in x.items()}
        return [_log_or_nan(v) for v in x]
    return paired(logs(a), logs(b), level)


def _log_or_nan(v) -> float:
    if v is None or not math.isfinite(v):
        return math.nan
    if v <= 0:
        raise LandscapeError(f"paired_log: a ratio or gain must be positive, got {v}")
    return math.log(v)


def logit_ci(values: Iterable, level: float = 0.95, eps: float = 1e-3) -> Interval:
    """Fractions in [0, 1]: the Student-t interval of the mean logit, back-transformed (method "logit-t").

    Values are first moved into [eps, 1 − eps] (a fraction of N items: eps = 1/(2N) is the usual continuity
    correction). The estimate is the inverse logit of the mean logit; estimate and bounds lie in (0, 1).

    Args:
        values: fractions in [0, 1] (non-finite ones dropped).
        level: the coverage.
        eps: the clamp into [eps, 1 − eps].

    Returns:
        The interval.
    """
    if not 0 < eps < 0.5:
        raise LandscapeError(f"logit_ci: eps must lie in (0, 0.5), got {eps}")
    v = finite(values)
    if np.any((v < 0) | (v > 1)):
        raise LandscapeError(f"logit_ci: fractions must lie in [0, 1], got {v[(v < 0) | (v > 1)].tolist()}")
    v = np.clip(v, eps, 1 - eps)
    i = t_ci(special.logit(v), level)
    inv = lambda x: float(special.expit(x)) if math.isfinite(x) else math.nan  # noqa: E731
    return Interval(inv(i.estimate), inv(i.low), inv(i.high), level, "logit-t", i.n)


def wilson_ci(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson's score interval for k successes in n trials (Wilson 1927): (p̂ + z²/2n ± z√(p̂(1−p̂)/n +
    z²/4n²)) / (1 + z²/n), always inside [0, 1]; the estimate is p̂ = k/n.

    Args:
        k: successes.
        n: trials.
        level: the coverage.

    Returns:
        The interval.
    """
    _check_level(level)
    if n < 1 or not 0 <= k <= n:
        raise LandscapeError(f"wilson_ci: need 0 <= k <= n and n >= 1, got k = {k}, n = {n}")
    z = float(special.ndtri((1 + level) / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, "wilson", n)


def clip_interval(interval: Interval, low: float, high: float) -> Interval:
    """The interval intersected with the parameter's range [low, high] (the true value lies there, so
    coverage is kept): e.g. a difference of two fractions in [−1, 1].

    Args:
        interval: the interval.
        low: the range's lower end.
        high: the range's upper end.

    Returns:
        The clipped interval.
    """
    return Interval(interval.estimate, max(interval.low, low) if math.isfinite(interval.low) else interval.low,
                    min(interval.high, high) if math.isfinite(interval.high) else interval.high,
                    interval.level, interval.method, interval.n)
