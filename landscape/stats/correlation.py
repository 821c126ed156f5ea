"""Spearman's rank correlation with a Fisher-z interval (docs/methods.md §H)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import special

from landscape.errors import LandscapeError
from landscape.stats.intervals import check_level


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
    check_level(level)
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
