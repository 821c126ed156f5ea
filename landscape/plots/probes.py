"""Probe-record figures: gradient-norm ratio per block, stream statistics over steps, unit singularities.

Probe records are dicts {"block", "metric", "value", "step"[, "epoch"]} (`landscape.probes`); a missing
metric is a `LandscapeError` naming it. A run is one list of records, or a list of such lists (one per
seed): every seed is drawn (thin, in the run's colour) and n is in the legend or the row label. Marks
such as the transition point are drawn where they are given, never computed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plots.style import (
    LABELS,
    PathLike,
    finish,
    grid,
    is_seeds,
    label_of,
    line_styles,
    plain_log_ticks,
    ramp,
    styled,
    with_n,
)


def _select(records: Iterable[dict], metric: str) -> list[dict]:
    rows = [r for r in records if r["metric"] == metric]
    if not rows:
        raise LandscapeError(f"no {metric!r} records to plot")
    return rows


def _seeds(run) -> list[list[dict]]:
    run = list(run)
    return [list(s) for s in run] if is_seeds(run) else [run]


def _series(rows: list[dict], x: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """block → (x values, values), sorted by x, blocks in first-seen order."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get(x) is not None:
            value = r["value"]
            out.setdefault(r["block"], []).append((float(r[x]), math.nan if value is None else float(value)))
    return {b: tuple(np.array(v) for v in zip(*sorted(pts))) for b, pts in out.items()}


def _block_mean(records: list[dict], metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x grid, mean over blocks at each x)."""
    series = _series(_select(records, metric), x)
    xs = sorted({v for xv, _ in series.values() for v in xv.tolist()})
    with np.errstate(all="ignore"):
        mean = [np.nanmean([ys[xv == g][0] for xv, ys in series.values() if (xv == g).any()]) for g in xs]
    return np.array(xs), np.array(mean)


def _draw_grad_ratio(ax, seeds: list[list[dict]], at: Sequence | None, key: str, legend: bool,
                     transitions: Sequence[str] = ()) -> None:
    """r_l per block for each `key` value in `at`: one seed as it is; several as the geometric mean over seeds
    with a band of ± 1 SD of log r_l. Transition blocks get an open square and a grey background."""
    rows = [_select(records, "grad_ratio") for records in seeds]
    blocks = list(dict.fromkeys(r["block"] for rs in rows for r in rs))
    at = list(dict.fromkeys(r.get(key) for r in rows[0])) if at is None else list(at)
    pos = {b: i for i, b in enumerate(blocks)}
    for b in transitions:
        if b in pos:
            ax.axvspan(pos[b] - 0.4, pos[b] + 0.4, color="0.9", lw=0, zorder=0)
    for color, when in zip(ramp(len(at)), at):
        vals = np.full((len(rows), len(blocks)), np.nan)
        for s, rs in enumerate(rows):
            for r in rs:
                if r.get(key) == when and r["value"] is not None and r["value"] > 0:
                    vals[s, pos[r["block"]]] = math.log(r["value"])
        if np.isnan(vals).all():
            continue
        with np.errstate(all="ignore"):
            mean = np.nanmean(vals, axis=0)
        name = f"{key} {when:g}" if isinstance(when, float) else f"{key} {when}"
        ax.plot(range(len(blocks)), np.exp(mean), marker="o", ms=3, color=color, label=name)
        if len(rows) > 1:
            with np.errstate(all="ignore"):
                sd = np.nanstd(vals, axis=0, ddof=1)
            ax.fill_between(range(len(blocks)), np.exp(mean - sd), np.exp(mean + sd), color=color, alpha=0.15, lw=0)
        marked = [pos[b] for b in transitions if b in pos]
        if marked:
            ax.plot(marked, np.exp(mean[marked]), ls="none", marker="s", ms=7, mfc="none", color=color,
                    label="transition block" if when == at[0] else None)
        for metric, style in (("jac_sigma_max", "--"), ("jac_sigma_min", ":")):
            bound = sorted((pos[r["block"]], r["value"]) for r in seeds[0]
                           if r["metric"] == metric and r.get(key) == when and r["block"] in pos)
            if bound:
                ax.plot(*zip(*bound), ls=style, color=color, lw=1, label=f"{metric[4:]} ({key} {when})")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    every = max(1, math.ceil(len(blocks) / 12))  # at most ~12 labelled blocks
    ax.set_xticks(range(0, len(blocks), every))
    ax.set_xticklabels(blocks[::every], rotation=90, fontsize=7)
    ax.set_xlabel("block")
    if legend and len(at) <= 8:
        ax.legend(fontsize=7, title=f"geometric mean of n = {len(rows)} seeds" + (", band ± 1 SD of log r"
                                                                                  if len(rows) > 1 else ""),
                  title_fontsize=6)


@styled
def plot_grad_ratio(records: Iterable[dict], steps: Sequence | None = None, title: str | None = None, *,
                    key: str = "step", path: PathLike | None = None) -> Figure:
    """Gradient-norm ratio per block (log y, 1 = norm preserved), one line per step or epoch (`key`),
    with the Jacobian bounds [σ_min, σ_max] (docs/methods.md §C.1) when the records hold them.

    Args:
        records: probe records with "grad_ratio" (and "sigma_min"/"sigma_max") rows.
        steps: the values of `key` to draw (default: all, in first-seen order).
        title: the figure's title.
        key: "step" or "epoch".
        path: where to save (None: not saved).

    Returns:
        The figure.
    """
    records = list(records)
    n_blocks = len({r["block"] for r in _select(records, "grad_ratio")})
    fig = Figure(figsize=(max(5.0, 0.18 * n_blocks + 3), 3.6), layout="constrained")
    ax = fig.add_subplot()
    _draw_grad_ratio(ax, [records], steps, key, legend=True)
    ax.set_ylabel(LABELS["grad_ratio"] + " (log scale)")
    ax.set_title(title or "gradient-norm ratio per block")
    return finish(fig, path, None)


@styled
def plot_grad_ratio_grid(runs: Mapping[str, Iterable], at: Sequence | None = None, *, key: str = "epoch",
                         ncols: int = 4, path: PathLike | None = None, title: str | None = None,
                         transitions: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """`plot_grad_ratio` for several runs: one panel per run (shared log y), one line per `key` value in `at`
    (colour from early, dark, to late, light). A run is one list of records or one per seed (geometric mean
    over seeds, band ± 1 SD of log r_l); `transitions`: run → its transition blocks, marked (open squares on
    a grey background).

    Args:
        runs: name → records, or a list of records per seed.
        at: the values of `key` to draw (default: all).
        key: "epoch" or "step".
        ncols: panels per row.
        path: where to save (None: not saved).
        title: the figure's title.
        transitions: run → its transition blocks.

    Returns:
        The figure.
    """
    if not runs:
        raise LandscapeError("no runs to plot")
    fig, axes = grid(len(runs), ncols, 3.4, 3.0, sharey=True)
    for i, (ax, (name, records)) in enumerate(zip(axes, runs.items())):
        seeds = _seeds(records)
        _draw_grad_ratio(ax, seeds, at, key, legend=i == 0, transitions=(transitions or {}).get(name, ()))
        ax.set_title(with_n(name, len(seeds)) if len(seeds) > 1 else name, fontsize=9)
    for ax in axes[:: max(1, min(ncols, len(axes)))]:
        ax.set_ylabel(LABELS["grad_ratio"] + " (log scale)")
    return finish(fig, path, title)


def _draw_stream(axes, seeds: list[list[dict]], metrics: Sequence[str], blocks: Sequence[str] | None, logy: bool,
                 transition: float | None, transition_label: str | None = None) -> None:
    """One line per site: one seed as it is, several as the mean over seeds with a band of ± 1 SD (of log10
    when `logy`); `transition` marks a step (dashed), labelled `transition_label`."""
    for ax, metric in zip(axes, metrics):
        per_seed = [_series(_select(records, metric), "step") for records in seeds]
        names = [b for b in per_seed[0] if blocks is None or b in blocks]
        for color, name in zip(ramp(len(names), "plasma"), names):
            if len(seeds) == 1:
                ax.plot(*per_seed[0][name], color=color, lw=1.2, label=name)
                continue
            xs = np.array(sorted({x for ser in per_seed if name in ser for x in ser[name][0].tolist()}))
            vals = np.full((len(seeds), xs.size), np.nan)
            for i, ser in enumerate(per_seed):
                if name in ser:
                    vals[i, np.searchsorted(xs, ser[name][0])] = ser[name][1]
            with np.errstate(all="ignore"):
                v = np.log10(np.where(vals > 0, vals, np.nan)) if logy else vals
                mean, sd = np.nanmean(v, axis=0), np.nanstd(v, axis=0, ddof=1)
            lo, mid, hi = (10 ** (mean - sd), 10 ** mean, 10 ** (mean + sd)) if logy else (mean - sd, mean, mean + sd)
            ax.plot(xs, mid, color=color, lw=1.2, label=name)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        if logy:
            ax.set_yscale("log")
        if transition is not None:
            ax.axvline(transition, color="k", ls="--", lw=0.9,
                       label=transition_label or f"transition point (step {transition:g})")
        ax.set_xlabel("step")
        ax.set_ylabel(label_of(metric) + (" (log scale)" if logy else ""))


@styled
def plot_stream(records: Iterable, metrics: Sequence[str] = ("x_norm2", "f_par_norm2", "f_ortho_norm2", "cos_x_out"),
                blocks: Sequence[str] | None = None, logy: bool = False, *, transition: float | None = None,
                path: PathLike | None = None, title: str | None = None) -> Figure:
    """Stream statistics (docs/methods.md §B.3) against step, one panel per metric, one line per site
    (colour = depth); records of several seeds are all drawn. transition: the step to mark (dashed).

    Args:
        records: stream records (one run's, or a list per seed).
        metrics: the statistics, one panel each.
        blocks: the sites drawn (default: all).
        logy: log y axes.
        transition: the step to mark (None: none).
        path: where to save (None: not saved).
        title: the figure's title.

    Returns:
        The figure.
    """
    seeds = _seeds(records)
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    _draw_stream(axes, seeds, metrics, blocks, logy, transition)
    for ax, metric in zip(axes, metrics):
        ax.set_title(label_of(metric) + (f" (n={len(seeds)} seeds)" if len(seeds) > 1 else ""), fontsize=9)
    if len(axes[0].lines) <= 12:
        axes[0].legend(fontsize=7, title="mean over n seeds, band ± 1 SD" if len(seeds) > 1 else None,
                       title_fontsize=7)
    return finish(fig, path, title)


@styled
def plot_stream_compare(runs: Mapping[str, Iterable], metrics: Sequence[str] = ("x_norm2", "f_par_norm2",
                                                                                "f_ortho_norm2"),
                        blocks: Sequence[str] | None = None, logy: bool = True, *,
                        transitions: Mapping[str, float | None] | None = None,
                        transition_labels: Mapping[str, str] | None = None, max_sites: int = 4,
                        path: PathLike | None = None, title: str | None = None) -> Figure:
    """Stream statistics for several runs: one row per run (n seeds in its label), one column per metric
    (shared y per column), one line per site — at most `max_sites`, evenly spaced, the last always — as the
    mean over seeds with a band of ± 1 SD (of log10 on a log axis); `transitions`: run → step to mark (None:
    none), `transition_labels`: run → its legend text.

    Args:
        runs: name → records (or a list per seed).
        metrics: the statistics, one column each.
        blocks: the sites (default: evenly spaced, at most `max_sites`).
        logy: log y axes.
        transitions: run → step to mark.
        transition_labels: run → the mark's legend text.
        max_sites: the most sites drawn per panel.
        path: where to save (None: not saved).
        title: the figure's title.

    Returns:
        The figure.
    """
    if not runs:
        raise LandscapeError("no runs to plot")
    fig = Figure(figsize=(4.0 * len(metrics), 2.8 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), len(metrics), squeeze=False, sharex=True, sharey="col")
    for row, (name, records) in zip(axes, runs.items()):
        seeds = _seeds(records)
        sites = blocks
        if sites is None:
            found = list(dict.fromkeys(r["block"] for r in _select(seeds[0], metrics[0])))
            keep = np.unique(np.linspace(len(found) - 1, 0, min(max_sites, len(found))).round().astype(int))
            sites = [found[i] for i in sorted(keep)]
        _draw_stream(row, seeds, metrics, sites, logy, (transitions or {}).get(name),
                     (transition_labels or {}).get(name))
        for ax in row[1:]:
            ax.set_ylabel("")
        row[0].set_ylabel(f"{with_n(name, len(seeds))}\n{label_of(metrics[0])}")
        row[-1].legend(fontsize=6, loc="best", title="mean over n seeds, band ± 1 SD" if len(seeds) > 1 else None,
                       title_fontsize=6)
    for ax, metric in zip(axes[0], metrics):
        ax.set_title(label_of(metric) + (" (log scale)" if logy else ""))
    return finish(fig, path, title)


@styled
def plot_singularity(records: Iterable[dict], metrics: Sequence[str] = ("dead_frac", "overlap_act", "eff_rank",
                                                                        "small_sv_frac"),
                     x: str = "epoch", *, path: PathLike | None = None, title: str | None = None) -> Figure:
    """Singularity statistics (docs/methods.md §A.2) against `x` ("epoch" when the records carry it, else
    "step"), per block (thin, colour = depth) and averaged over blocks (black).

    Args:
        records: singularity records.
        metrics: the statistics, one panel each.
        x: "epoch" or "step".
        path: where to save (None: not saved).
        title: the figure's title.

    Returns:
        The figure.
    """
    records = list(records)
    if x == "epoch" and not any("epoch" in r for r in records):
        x = "step"
    fig = Figure(figsize=(4.0 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = _series(_select(records, metric), x)
        for color, (xs, ys) in zip(ramp(len(series)), series.values()):
            ax.plot(xs, ys, color=color, lw=0.8, alpha=0.7)
        ax.plot(*_block_mean(records, metric, x), color="k", lw=2, label="mean over blocks")
        ax.set_xlabel(x)
        ax.set_ylabel(label_of(metric))
        ax.set_title(label_of(metric), fontsize=9)
    axes[0].legend(fontsize=7)
    return finish(fig, path, title)


@styled
def plot_singularity_compare(runs: Mapping[str, Iterable],
                             metrics: Sequence[str] = ("dead_frac", "overlap_act", "eff_rank", "small_sv_frac"),
                             x: str = "epoch", *, path: PathLike | None = None, title: str | None = None,
                             colors: Mapping[str, Any] | None = None, styles: Mapping[str, Mapping] | None = None
                             ) -> Figure:
    """Unit statistics (docs/methods.md §A.2), averaged over blocks, against `x`: one panel per metric, one
    line per run (the mean over its seeds, with a band of ± 1 SD and n in the legend).

    Args:
        runs: name → records (or a list per seed).
        metrics: the statistics, one panel each.
        x: "epoch" or "step".
        path: where to save (None: not saved).
        title: the figure's title.
        colors: run → colour.
        styles: run → line style dict.

    Returns:
        The figure.
    """
    if not runs:
        raise LandscapeError("no runs to plot")
    fig = Figure(figsize=(3.6 * len(metrics), 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    style = line_styles(runs, styles, colors)
    for name, records in runs.items():
        seeds = _seeds(records)
        for ax, metric in zip(axes, metrics):
            curves = [_block_mean(s, metric, x) for s in seeds]
            xs = np.array(sorted({v for c in curves for v in c[0].tolist()}))
            vals = np.full((len(curves), xs.size), np.nan)
            for i, (cx, cy) in enumerate(curves):
                vals[i, np.searchsorted(xs, cx)] = cy
            with np.errstate(all="ignore"):
                ax.plot(xs, np.nanmean(vals, axis=0), lw=1.6, label=with_n(name, len(seeds)),
                        **{"marker": "o", "ms": 3, **style[name]})
                if len(seeds) > 1:
                    mean, sd = np.nanmean(vals, axis=0), np.nanstd(vals, axis=0, ddof=1)
                    ax.fill_between(xs, mean - sd, mean + sd, color=style[name]["color"], alpha=0.15, lw=0)
    for ax, metric in zip(axes, metrics):
        ax.set(xlabel=x, ylabel=label_of(metric))
        ax.set_title(label_of(metric), fontsize=9)
    axes[0].legend(fontsize=7, title="mean over n seeds, band ± 1 SD", title_fontsize=7)
    return finish(fig, path, title)
