"""The one verdict rule every claim uses, Holm's multiplicity correction and the paired t-test's power
(docs/methods.md §H, §H.2, §H.3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import special

from landscape.errors import LandscapeError
from landscape.stats.intervals import Interval, paired, t_quantile

VERDICTS = ("agrees", "disagrees", "inconclusive")
_DIRECTIONS = {">": 1, "greater": 1, "higher": 1, "increase": 1, "+": 1, 1: 1,
               "<": -1, "less": -1, "lower": -1, "decrease": -1, "-": -1, -1: -1}


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
