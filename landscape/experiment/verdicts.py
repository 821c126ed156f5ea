"""Every declared claim judged the one way (docs/methods.md §H): its test on the right data, Holm within its
paper's family, its minimum detectable effect, and what RESULTS.md said before.

For one claim (A − B on its primary metric, paired by seed):

    data        order "before" (declared before its data was seen): the quick profile's seeds — confirmatory.
                order "after": the confirm profile's fresh seeds 5-9 when their records exist — confirmatory;
                otherwise the quick seeds, labelled exploratory. The quick-seed result of an "after" claim is
                kept beside it ("exploratory").
    scale       "log" for ratios and gains (`keys.scale_of`, or the claim's `scale`): the test is on
                log A − log B and the estimate is the geometric-mean ratio A/B with its interval;
                "fraction": a difference of fractions, its interval clipped to [−1, 1]; else linear.
    p, CI       the paired t-test and its 95% Student-t interval (`landscape.stats.paired`)
    MDE         `stats.mde_paired(sd, n)`: the true difference the test detects with power 0.8 at α = 0.05
                two-sided, from the observed SD of the differences (on the log scale for ratios: a factor)
    Holm        p_holm over the verdict tests of every claim of the paper (`stats.holm`)
    verdict     raw: from the 95% interval (agrees / disagrees / inconclusive); adjusted: "agrees" or
                "disagrees" (by the sign of the estimate) when p_holm < 0.05, else "inconclusive";
                "underpowered" when the paper publishes an effect for the metric and the MDE exceeds it
    previous    the verdict the old rule gives (raw interval, quick seeds, the previous metric if it changed):
                checked against the TOML's `previous.verdict`, listed in "Verdicts that changed" if it differs
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from landscape import stats
from landscape.experiment.keys import scale_of
from landscape.experiment.summary import per_seed

ALPHA = 0.05
POWER = 0.8


def claim_scale(claim: Mapping) -> str:
    """The scale a claim is tested on: its declared "scale", else the metric's (`keys.scale_of`).

    Args:
        claim: a claim.

    Returns:
        "log", "fraction" or "linear".
    """
    return claim.get("scale") or scale_of(claim["metric"])


def claim_test(summary: Mapping, claim: Mapping, metric: str | None = None, scale: str | None = None) -> dict:
    """The paired test of `claim` (A − B of `metric`, default the claim's) on the seeds of `summary`:
    {"metric", "scale", "n", "seeds", "estimate", "low", "high", "p", "sd", "mde", "verdict", "mean_a",
    "mean_b"} with estimate, interval and MDE on the reported scale (a ratio A/B for "log").

    Args:
        summary: a summary dict.
        claim: the claim (cells, metric, direction).
        metric: the statistic tested (None: the claim's metric).
        scale: the test scale (None: `claim_scale`).

    Returns:
        The test dict.
    """
    metric = metric or claim["metric"]
    scale = scale or claim_scale(claim)
    a, b = claim["cells"]
    va, vb = per_seed(summary, a, metric), per_seed(summary, b, metric)
    seeds = [s for s in va if s in vb]
    va, vb = {s: va[s] for s in seeds}, {s: vb[s] for s in seeds}
    log = scale == "log"
    res = stats.paired_log(va, vb) if log else stats.paired(va, vb)
    ci = res.ci
    if scale == "fraction":
        ci = stats.clip_interval(ci, -1.0, 1.0)
    mde = stats.mde_paired(res.sd, res.n, ALPHA, POWER)
    back = math.exp if log else (lambda v: v)
    ok = lambda v: v if v is not None and math.isfinite(v) else None  # noqa: E731
    mean = lambda v: ok(stats.mean_sd(list(v.values()))[0])  # noqa: E731
    return {"metric": metric, "scale": scale, "n": res.n, "seeds": seeds,
            "estimate": ok(back(res.mean)) if res.n else None, "low": ok(back(ci.low)), "high": ok(back(ci.high)),
            "p": ok(res.p), "sd": ok(res.sd), "mde": ok(back(mde)) if math.isfinite(mde) else None,
            "mde_test": ok(mde), "verdict": stats.verdict((ci.low, ci.high), claim["direction"]),
            "mean_a": mean(va), "mean_b": mean(vb), "test_mean": ok(res.mean)}


def published_effect(claim: Mapping, scale: str) -> float | None:
    """The paper's effect A − B on the test scale (log(a/b) for "log"), or None.

    Args:
        claim: the claim (its "published" a and b).
        scale: the test scale.

    Returns:
        The effect, or None.
    """
    pub = claim.get("published")
    if not pub:
        return None
    if scale == "log":
        return math.log(pub["a"] / pub["b"]) if pub["a"] > 0 and pub["b"] > 0 else None
    return pub["a"] - pub["b"]


def adjusted_verdict(test: Mapping, p_holm: float | None, direction: str, effect: float | None) -> str:
    """The verdict after Holm (and the power rule): see the module docstring.

    Args:
        test: the claim's `claim_test`.
        p_holm: its Holm-adjusted p (None: undefined).
        direction: "greater" or "less".
        effect: the paper's effect on the test scale (None: none published).

    Returns:
        "agrees", "disagrees", "inconclusive" or "underpowered".
    """
    if effect is not None and (test["mde_test"] is None or test["mde_test"] > abs(effect)):
        return "underpowered"
    if p_holm is None or not p_holm < ALPHA or not test["test_mean"]:
        return "inconclusive"
    sign = 1 if direction == "greater" else -1
    return "agrees" if sign * test["test_mean"] > 0 else "disagrees"


def judge_claim(store, grid: str, claim: Mapping, paper: str) -> dict:
    """One claim's row before Holm (see the module docstring).

    Args:
        store: the records and experiments.
        grid: the grid's name.
        claim: the resolved claim.
        paper: the paper's key.

    Returns:
        The row (test, status, order, exploratory test, ...).
    """
    quick = store.summary(grid)
    after = claim.get("order", "before") == "after"
    confirm = after and store.has(grid, "confirm")
    main = claim_test(store.summary(grid, "confirm") if confirm else quick, claim)
    status = "confirmatory" if (not after or confirm) else "exploratory"
    prev = claim.get("previous")
    old = None
    if prev:  # the old rule (raw interval, linear scale) on the old metric and seeds, from the same runs
        seeds = prev.get("seeds")
        data = quick if seeds is None else _only_seeds(quick, seeds)
        old = claim_test(data, claim, prev.get("metric") or claim["metric"], "linear")
    return {"paper": paper, "grid": grid, "name": claim["name"], "text": claim["text"], "cells": claim["cells"],
            "direction": claim["direction"], "metric": claim["metric"], "secondary": claim.get("secondary", []),
            "declared": claim.get("declared"),
            "first_run": claim.get("first_run"), "order": claim.get("order", "before"), "status": status,
            "profile": "confirm" if confirm else "quick", "test": main,
            "exploratory": claim_test(quick, claim) if confirm else None,
            "published": claim.get("published"), "effect": published_effect(claim, main["scale"]),
            "previous": {**prev, "test": old} if prev else None}


def _only_seeds(summary: Mapping, seeds: Sequence[int]) -> dict:
    """`summary` with every cell's per-seed values restricted to `seeds` (for `per_seed`)."""
    keep = set(seeds)
    cells = []
    for row in summary["cells"]:
        idx = [i for i, s in enumerate(row["seeds"]) if s in keep]
        part = {p: {k: {**v, "values": [v["values"][i] for i in idx]} for k, v in row[p].items()}
                for p in ("final", "init")}
        cells.append({**row, **part, "seeds": [row["seeds"][i] for i in idx]})
    return {**summary, "cells": cells}


def holm_family(rows: Sequence[dict]) -> list[dict]:
    """The rows of one paper's family with p_holm and the adjusted verdict filled in.

    Args:
        rows: `judge_claim` rows of one paper.

    Returns:
        The rows with "p_holm", "m" and "verdict".
    """
    adjusted = stats.holm([r["test"]["p"] for r in rows])
    out = []
    for r, ph in zip(rows, adjusted):
        ph = ph if math.isfinite(ph) else None
        out.append({**r, "p_holm": ph, "m": len(rows),
                    "verdict": adjusted_verdict(r["test"], ph, r["direction"], r["effect"])})
    return out


def judge_all(store, studies: Sequence[str] | None = None) -> list[dict]:
    """Every claim of the registered grids (quick profiles with records), and the rows of each study's
    `judged(store)` (pre-Holm rows in `judge_claim`'s shape), judged, in registry order.

    Args:
        store: the records and experiments.
        studies: the studies whose `judged` rows join (None: all registered).

    Returns:
        The judged rows.
    """
    from landscape.experiment import registry

    by_paper: dict[str, list[dict]] = {}
    for spec in registry.grids():
        if spec.profile != "quick" or not store.has(spec.name):
            continue
        exp = store.experiment(spec.name)
        for claim in exp.claims:
            by_paper.setdefault(exp.paper, []).append(judge_claim(store, spec.name, claim, exp.paper))
    for name in registry.STUDIES:  # studies whose grids are not experiment TOMLs judge their own claims' tests
        judged = getattr(registry.study(name), "judged", None)
        for row in judged(store) if judged is not None else ():
            by_paper.setdefault(row["paper"], []).append(row)
    return [row for rows in by_paper.values() for row in holm_family(rows)]
