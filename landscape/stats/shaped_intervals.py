"""Intervals of the right shape (docs/methods.md §H.4): positive quantities on the log scale, fractions on the
logit scale, successes by Wilson's score interval, and an interval clipped to its parameter's range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import special

from landscape.errors import LandscapeError
from landscape.stats.intervals import Interval, Paired, check_level, finite, paired, t_ci


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
    check_level(level)
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
