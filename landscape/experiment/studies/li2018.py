"""Li et al. 2018 (docs/methods.md §F.6): the depth series' RESULTS.md tables and figures, from records/li2018_depth.

Tables: `li2018_cells` (every statistic per cell over seeds) and `li2018_claims` (the declared claims, Holm).
Figures: contours and 3-D surfaces of seed 0 (one log colour scale per family), the non-convexity maps (one
log scale), the depth series with intervals, and the 1-D slices (family by colour, variant by line style).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from landscape import stats
from landscape.experiment import li2018 as L
from landscape.experiment.summary import fmt

RECORDS = "li2018_depth"
GRIDS: list = []
NAMES = {"resnet": "ResNet", "fc": "FC"}
VARIANT = {"short": "shortcuts", "noshort": "no shortcuts"}


def runs_of(store) -> dict[str, list[dict]]:
    """cell → records of the committed depth series.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        {cell: [record, ...]}.
    """
    return L.load_li(store.records / RECORDS)


def measured(recs: Sequence[Mapping]) -> list[Mapping]:
    """The records that were measured (a diverged run has no measurement).

    Args:
        recs: a cell's records.

    Returns:
        Those with a measurement.
    """
    return [r for r in recs if r.get("measure")]


def _label(family: str, variant: str) -> str:
    return f"{NAMES[family]}, {VARIANT[variant]}"


def _ci_text(i: Mapping | stats.Interval) -> str:
    d = i.as_dict() if isinstance(i, stats.Interval) else i
    if not d["n"]:
        return "—"
    inner = f" [{fmt(d['low'])}, {fmt(d['high'])}]" if math.isfinite(d["low"]) else ""
    return f"{fmt(d['estimate'])}{inner}"


def _interval(values: Sequence[float], kind: str) -> stats.Interval:
    """The interval of the right shape: log-t for positive ratios, logit-t for fractions, t otherwise."""
    v = stats.finite(values)
    if kind == "log" and v.size and (v > 0).all():
        return stats.log_ci(v)
    if kind == "logit" and v.size and ((v >= 0) & (v <= 1)).all():
        return stats.logit_ci(v)
    return stats.t_ci(v)


COLUMNS = (("train_acc", "train acc.", "logit"), ("test_acc", "test acc.", "logit"),
           ("train_loss", "train loss", "log"), (L.PRIMARY, "**non-convexity** (primary)", "log"),
           ("origin_ratio", "ratio at the minimum", "log"), ("origin_lambda_max", "λmax at the minimum", "log"),
           ("surface_nonconvexity", "2-D surface non-convexity", "logit"), ("rise_r0.1", "rise at r = 0.1", "log"),
           ("rise_r0.25", "rise at r = 0.25", "log"))


def cells_table(store) -> str:
    """Markdown: per cell, each statistic's estimate [95% interval] over seeds (log-t for ratios and losses,
    logit-t for fractions: the geometric mean or the back-transformed mean logit), n and unconverged solves.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    runs = runs_of(store)
    head = "| net | depth | n | " + " | ".join(c[1] for c in COLUMNS) + " | unconverged solves |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for family, variant, depth in L.present_cells(runs):
        cell = L.cell_name(family, variant, depth)
        recs = runs[cell]
        vals = [_ci_text(_interval(list(L.per_seed(runs, cell, key).values()), kind)) for key, _, kind in COLUMNS]
        unconv = sum(r["keys"]["unconverged"] for r in measured(recs))
        lines.append(f"| {_label(family, variant)} | {depth} | {len(recs)} | " + " | ".join(vals) + f" | {unconv} |")
    return "\n".join(lines)


def judged(store) -> list[dict]:
    """The declared claims' tests before Holm, for `landscape.experiment.verdicts.judge_all` (paper li2018).

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Pre-Holm rows.
    """
    return L.judged(runs_of(store)) if (store.records / RECORDS).is_dir() else []


def verdicts_table(store) -> str:
    """The claims as every paper's are shown (`tables.verdict_table`), Holm within li2018's family.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    from landscape.experiment.tables import MDE_NOTE, verdict_table

    rows = [r for r in store.verdicts if r["paper"] == "li2018"]
    return verdict_table(rows) + "\n\n" + MDE_NOTE


def provenance_table(store) -> str:
    """When the claims were declared and what data they precede.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    from landscape.experiment.tables import provenance_table as table

    return table([r for r in store.verdicts if r["paper"] == "li2018"])


def changed(store) -> list[dict]:
    """The previous RESULTS.md's Li verdict (a different stand-in, not a declared claim) and what replaced it.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Rows {claim, old, new, why}.
    """
    rows = [r for r in store.verdicts if r["paper"] == "li2018"]
    now = ", ".join(f"`{r['name']}` **{r['verdict']}**" for r in rows) or "not run"
    return [{"claim": "li2018: without skips deep nets are chaotic, with skips near-convex",
             "old": "**disagrees** (FC nets without normalization, depth 20, 3 seeds; residual sharper; no declared "
                    "metric)",
             "new": now,
             "why": "tested where the claim lives: BatchNorm ResNets at depths 20, 56 and 110 with and without "
                    "shortcuts, a declared Hessian non-convexity metric, 5 seeds, Holm"}]


def _grid_order(runs: Mapping) -> list[tuple[str, str, int]]:
    """The present cells as figure rows (family, then variant) and columns (depth), as in Li et al.'s Fig. 5."""
    order = {f: i for i, f in enumerate(L.FAMILIES)}
    return sorted(L.present_cells(runs), key=lambda c: (order.get(c[0], 9), L.VARIANTS.index(c[1]), c[2]))


def _ncols(runs: Mapping) -> int:
    return max(1, len({d for _, _, d in L.present_cells(runs)}))


def _seed0(runs: Mapping, family: str) -> dict[str, tuple]:
    out = {}
    for fam, variant, depth in _grid_order(runs):
        recs = measured(runs[L.cell_name(fam, variant, depth)])
        if fam == family and recs:
            m = recs[0]["measure"]
            out[f"{NAMES[fam]}-{depth}, {VARIANT[variant]} (seed {recs[0]['seed']})"] = (m["axis"], m["loss"])
    return out


def contours(family: str):
    """A figure function: seed-0 contours of every cell of `family` on one log colour scale.

    Args:
        family: "resnet" or "fc".

    Returns:
        draw(store, path) -> Figure.
    """
    def draw(store, path):
        from landscape.plots import plot_contour_grid

        runs = runs_of(store)
        first = next((m[0] for m in map(measured, runs.values()) if m and m[0]["family"] == family), None)
        points = [(p["a"], p["b"]) for p in first["measure"]["map"]] if first else None
        return plot_contour_grid(_seed0(runs, family), path, points=points, ncols=_ncols(runs),
                                 title=f"{NAMES[family]}: filter-normalized surfaces (+: Hessian map points)")
    return draw


def surfaces_3d(store, path):
    """Seed-0 ResNet surfaces in 3-D, log10 loss, one z range.

    Args:
        store: the records; path: where the figure is saved (PATH.png, PATH.pdf).

    Returns:
        The figure.
    """
    from landscape.plots import plot_surface_3d_grid

    runs = runs_of(store)
    return plot_surface_3d_grid(_seed0(runs, "resnet"), path, ncols=_ncols(runs),
                                title="ResNet surfaces (log10 loss, one z range)")


def maps(store, path):
    """Li's non-convexity map per cell: geometric mean over seeds of max(|λmin/λmax|, floor), one log scale.

    Args:
        store: the records; path: where the figure is saved (PATH.png, PATH.pdf).

    Returns:
        The figure.
    """
    from landscape.plots import plot_value_maps

    runs, panels = runs_of(store), {}
    n = 0
    for family, variant, depth in _grid_order(runs):
        recs = measured(runs[L.cell_name(family, variant, depth)])
        if not recs:
            continue
        n = max(n, len(recs))
        grids = []
        for r in recs:
            axis = sorted({p["a"] for p in r["measure"]["map"]})
            v = {(p["a"], p["b"]): max(p["ratio"], L.RATIO_FLOOR) for p in r["measure"]["map"]}
            grids.append([[v[(a, b)] for a in axis] for b in axis])
        geo = np.exp(np.mean(np.log(np.asarray(grids, float)), 0))
        panels[f"{NAMES[family]}-{depth}, {VARIANT[variant]}"] = (axis, geo)
    return plot_value_maps(panels, path, floor=L.RATIO_FLOOR, ncols=_ncols(runs),
                           title=f"Non-convexity |λmin/λmax| (geometric mean of n = {n} seeds per map)")


def depth_series(store, path):
    """The primary metric and three secondary ones against depth, per family and variant.

    Args:
        store: the records; path: where the figure is saved (PATH.png, PATH.pdf).

    Returns:
        The figure.
    """
    from landscape.plots import plot_family_series

    runs, series, styles = runs_of(store), {}, {}
    keys = ((L.PRIMARY, "non-convexity (log)", "log"), ("surface_nonconvexity", "2-D surface non-convexity", "logit"),
            ("rise_r0.25", "loss rise at r = 0.25 (log)", "log"), ("train_acc", "train accuracy", "logit"))
    for family in L.FAMILIES:
        for variant in L.VARIANTS:
            label = _label(family, variant)
            depths = sorted(d for f, v, d in L.present_cells(runs) if (f, v) == (family, variant))
            if not depths:
                continue
            s = {"x": depths}
            for key, _, kind in keys:
                ivs = [_interval(list(L.per_seed(runs, L.cell_name(family, variant, d), key).values()), kind)
                       for d in depths]
                s[key] = {"estimate": [i.estimate for i in ivs], "low": [i.low for i in ivs],
                          "high": [i.high for i in ivs], "n": [i.n for i in ivs]}
            series[label], styles[label] = s, (family, variant)
    return plot_family_series(series, styles, path, keys=[k[0] for k in keys], ylabels=[k[1] for k in keys],
                              log=[k[2] == "log" for k in keys], band="95% CI (log-t / logit-t)",
                              title="Li et al. 2018 on MNIST-1D: convexity against depth")


def slices(store, path):
    """The loss along direction 1 (the 2-D grid's b = 0 row) per depth: every family and variant.

    Args:
        store: the records; path: where the figure is saved (PATH.png, PATH.pdf).

    Returns:
        The figure.
    """
    from landscape.plots import plot_family_curves

    runs, panels, styles = runs_of(store), {}, {}
    for family, variant, depth in L.present_cells(runs):
        recs = measured(runs[L.cell_name(family, variant, depth)])
        if not recs:
            continue
        axis = np.asarray(recs[0]["measure"]["axis"], float)
        row = int(np.argmin(np.abs(axis)))
        vals = [np.asarray(r["measure"]["loss"], float)[row] for r in recs]
        label = _label(family, variant)
        panels.setdefault(f"depth {depth}", {})[label] = (axis, vals)
        styles[label] = (family, variant)
    return plot_family_curves(panels, styles, path, xlabel="direction 1 (filter-normalized)",
                              title="1-D slices through the minimum")


TABLES = {"li2018_verdicts": verdicts_table, "li2018_provenance": provenance_table, "li2018_cells": cells_table}
FIGURES = {"li2018_contours_resnet": contours("resnet"), "li2018_contours_fc": contours("fc"),
           "li2018_3d_resnet": surfaces_3d, "li2018_maps": maps, "li2018_depth": depth_series,
           "li2018_slices": slices}


def budget_table(store) -> str:
    """The grid's wall time, load and CPU time (records/li2018_depth/budget.json, per part), and the full
    profile's GPU-hours.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    from landscape.experiment.records import minutes, read_budget
    from landscape.experiment.studies.verdicts import BUDGET_MINUTES, part_cells

    b = read_budget(store.records / RECORDS) or {}
    runs = runs_of(store)
    lines = ["| grid part | runs | wall time (min) | load average, start → end | CPU time (min) | measurement CPU "
             f"time (min) | within {BUDGET_MINUTES} min | full profile |", "|---|---|---|---|---|---|---|---|"]
    for part in b.get("parts", []):
        n = sum(len(v) for k, v in runs.items() if k.startswith(part["name"]))
        cpu, cells = part_cells(part)
        measured = minutes(part.get("measure_cpu_seconds"))
        lines.append(f"| li2018_depth: {part['name']}* | {n} | {cells} | {fmt(measured, 3)} | "
                     f"{budget_verdict(cpu, measured)} | {b.get('full', '')} |")
    return "\n".join(lines)


def budget_verdict(cpu: float | None, measured: float | None) -> str:
    """The budget column: from the total CPU time when recorded; otherwise "**no**" when the measurement's CPU
    time alone exceeds the budget (a lower bound of the total), else "not recorded".

    Args:
        cpu: the part's total CPU minutes or None; measured: its measurement CPU minutes or None.

    Returns:
        The cell text.
    """
    from landscape.experiment.records import within
    from landscape.experiment.studies.verdicts import BUDGET_MINUTES

    if cpu is None and measured is not None and measured > BUDGET_MINUTES:
        return "**no** (measurement alone)"
    return within(cpu, BUDGET_MINUTES)


TABLES["li2018_budget"] = budget_table
