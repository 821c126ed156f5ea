"""Intervals of a mean over seeds and the paired difference (the conventions of `landscape.stats`).

    mean_sd, t_ci, bootstrap_ci, ci     one sample: (mean, sd, n) and its Student-t or bootstrap interval
    paired                              d_i = a_i − b_i over seeds present in both, with the paired t-test
    summarize                           the one way a metric is reported (mean, sd, n, t interval)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from landscape.errors import LandscapeError


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

def check_level(level: float) -> None:
    """Refuse a confidence level outside (0, 1).

    Args:
        level: the coverage.

    Raises:
        LandscapeError: the level is not inside (0, 1).
    """
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
    check_level(level)
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
    check_level(level)
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
