"""Figures over runs: training curves (mean over seeds with a ± SD band, n in the legend), a final value
against a swept setting, and one metric against others across runs with Spearman's ρ and its interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from landscape import stats
from landscape.errors import LandscapeError
from landscape.plots.style import (
    PathLike,
    finish,
    is_seeds,
    label_of,
    line_styles,
    mean_sd,
    plain_log_ticks,
    seed_stack,
    styled,
    with_n,
)


@styled
def plot_training_curves(histories: Mapping[str, Sequence], path: PathLike | None = None, *,
                         title: str | None = None, log_loss: bool = True, test: bool = False,
                         colors: Mapping[str, Any] | None = None, styles: Mapping[str, Mapping] | None = None
                         ) -> Figure:
    """Training loss and training accuracy against epoch, one line per label with n (seeds) in the legend.

    Args:
        histories: label → per-epoch records with "epoch", "train_loss", "train_acc" (metrics.jsonl lines), or
            label → a list of such lists (one per seed): drawn as the mean over seeds with a band of ± 1 sample SD
            (the legend says so, with each label's n).
        path: where to save (None: not saved).
        title: the figure's title.
        log_loss: a log loss axis.
        test: also draw "test_acc" in a third panel, in each label's own style.
        colors: label → colour.
        styles: label → {"color", "ls"} (e.g. `family_styles`: family by colour, variant by line style).

    Returns:
        The figure.
    """
    panels = [("train_loss", "training loss"), ("train_acc", "training accuracy")]
    if test:
        panels.append(("test_acc", "test accuracy"))
    fig = Figure(figsize=(5 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels))
    style = line_styles(histories, styles, colors)
    for name, runs in histories.items():
        runs = runs if is_seeds(runs) else [runs]
        for ax, (key, _) in zip(axes, panels):
            epochs, vals = seed_stack(runs, key)
            with np.errstate(all="ignore"):
                mean = np.nanmean(vals, axis=0) if len(runs) > 1 else vals[0]
            ax.plot(epochs, mean, label=with_n(name, len(runs)), lw=1.8, **style[name])
            if len(runs) > 1:
                with np.errstate(all="ignore"):
                    sd = np.nanstd(vals, axis=0, ddof=1)
                    ax.fill_between(epochs, mean - sd, mean + sd, color=style[name]["color"], alpha=0.15, lw=0)
    axes[0].set(xlabel="epoch", ylabel="training loss (cross-entropy" + (", log scale)" if log_loss else ")"),
                title="training loss")
    if log_loss:
        axes[0].set_yscale("log")
        plain_log_ticks(axes[0].yaxis)
    top = max((float(np.nanmax(ln.get_ydata())) for ax in axes[1:] for ln in ax.lines
               if np.isfinite(ln.get_ydata()).any()), default=1.0)
    for ax, (_, label) in zip(axes[1:], panels[1:]):
        ax.set(xlabel="epoch", ylabel=label, title=label, ylim=(0, min(1.02, 1.1 * top + 0.02)))
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside right center", fontsize=7,
               title="mean over n seeds,\nband: ± 1 SD", title_fontsize=7)
    return finish(fig, path, title)


@styled
def plot_sweep(panels: Mapping[str, Mapping[str, Mapping[float, Any]]], path: PathLike | None = None, *,
               ylabel: str, xlabel: str | Sequence[str] = "setting", logx: bool = False, logy: bool = False,
               hline: float | None = None, reference: Mapping[str, tuple[Sequence, Sequence]] | None = None,
               title: str | None = None, colors: Mapping[str, Any] | None = None,
               styles: Mapping[str, Mapping] | None = None) -> Figure:
    """A final value against a swept setting: one panel per entry of `panels` (title → lines), one line per
    label (label → {x: value}); a value is a number or per-seed numbers (mean ± sample SD error bars, n in
    the legend; with `logy` the geometric mean with bars of ± 1 SD of log10, which never reach 0).

    Settings whose runs left no finite value (diverged) are marked × at the top of the panel. `xlabel` is
    one label or one per panel; `hline` draws a reference level (e.g. 1 for a norm-preserving ratio);
    `reference`: panel title → (xs, ys) of a reference curve drawn dashed grey (e.g. λ^L).

    Args:
        panels: panel title → {label → {x: value or per-seed values}}.
        path: where to save (None: not saved).
        ylabel: the y axis label.
        xlabel: one label, or one per panel.
        logx: a log x axis.
        logy: a log y axis (geometric means).
        hline: a reference level (None: none).
        reference: panel title → (xs, ys) of a dashed reference curve.
        title: the figure's title.
        colors: label → colour.
        styles: label → line style dict.

    Returns:
        The figure.
    """
    if not panels:
        raise LandscapeError("no sweep to plot")
    xlabels = [xlabel] * len(panels) if isinstance(xlabel, str) else list(xlabel)
    fig = Figure(figsize=(4.4 * len(panels), 3.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    style = line_styles(dict.fromkeys(lab for lines in panels.values() for lab in lines), styles, colors)
    for ax, (panel, lines), xl in zip(axes, panels.items(), xlabels):
        for label, points in lines.items():
            xs = np.array(sorted(points), dtype=float)
            st = np.array([mean_sd(points[x]) for x in sorted(points)]).reshape(-1, 3)
            ok = np.isfinite(st[:, 0])
            n = int(st[:, 2].max()) if st.size else 0
            kw = {"marker": "o", "ms": 4, **style[label]}
            kw.pop("markevery", None)
            if logy:  # a log axis: the geometric mean with bars of ± 1 SD of log10 (never below 0)
                st = np.array([mean_sd(_log10(points[x])) for x in sorted(points)]).reshape(-1, 3)
                ok = np.isfinite(st[:, 0])
                centre = 10 ** st[ok, 0]
                yerr = [centre - 10 ** (st[ok, 0] - st[ok, 1]), 10 ** (st[ok, 0] + st[ok, 1]) - centre]
            else:
                centre, yerr = st[ok, 0], st[ok, 1]
            ax.errorbar(xs[ok], centre, yerr=yerr, lw=1.5, capsize=3, label=with_n(label, n), **kw)
            if (~ok).any():
                ax.plot(xs[~ok], np.ones((~ok).sum()), ls="none", marker="x", ms=8, mew=2,
                        color=style[label]["color"], transform=ax.get_xaxis_transform(), clip_on=False,
                        label=f"{label}: diverged")
        if reference and panel in reference:
            rx, ry = reference[panel]
            ax.plot(rx, ry, color="0.4", ls="--", lw=1.0, label="reference")
        if hline is not None:
            ax.axhline(hline, color="0.5", lw=0.8)
        ax.set(xlabel=xl, title=panel, xscale="log" if logx else "linear", yscale="log" if logy else "linear")
        ticks = sorted({float(x) for points in lines.values() for x in points})
        if len(ticks) <= 12:  # label the swept values themselves
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7, title=("geometric mean, bars ± 1 SD of log10" if logy else "mean ± 1 SD")
                  + " over n seeds", title_fontsize=7)
    axes[0].set_ylabel(ylabel + (" (log scale)" if logy and "log scale" not in ylabel else ""))
    return finish(fig, path, title)


def _log10(value):
    values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    return [math.log10(v) if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]


@styled
def plot_metric_scatter(points: Mapping[str, Mapping[str, float | None]], x: str, ys: Sequence[str],
                        path: PathLike | None = None, *, xlabel: str | None = None, title: str | None = None,
                        annotate: bool | None = None) -> Figure:
    """One panel per metric in `ys` against `x` across points (label → {metric: value}), each panel titled
    with Spearman's ρ, its 95% interval and n over the points that have both values (docs/methods.md §A.4).
    A point should be a cell mean: runs of one cell are not independent of each other.
    annotate: write each point's label (default: only with at most 8 points, where labels stay legible).

    Args:
        points: label → {metric: value}.
        x: the x metric.
        ys: the y metrics, one panel each.
        path: where to save (None: not saved).
        xlabel: the x axis label (None: `label_of(x)`).
        title: the figure's title.
        annotate: write each point's label (None: with at most 8 points).

    Returns:
        The figure.
    """
    if not points:
        raise LandscapeError("no runs to plot")
    fig = Figure(figsize=(3.6 * len(ys), 3.4), layout="constrained")
    axes = fig.subplots(1, len(ys), squeeze=False)[0]
    for ax, metric in zip(axes, ys):
        pts = [(label, p.get(x), p.get(metric)) for label, p in points.items()]
        pts = [(lab, float(a), float(b)) for lab, a, b in pts
               if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
        if pts:
            xs, vs = np.array([p[1] for p in pts]), np.array([p[2] for p in pts])
            ax.scatter(xs, vs, s=22, color="#0072B2", zorder=3)
            if annotate or (annotate is None and len(pts) <= 8):
                for i, (lab, a, b) in enumerate(pts):
                    ax.annotate(lab, (a, b), fontsize=6, xytext=(3, 2 if i % 2 else -8), textcoords="offset points")
            s = stats.spearman(xs, vs)
            interval = f" [{s['low']:+.2f}, {s['high']:+.2f}]" if math.isfinite(s["low"]) else ""
            ax.set_title(f"Spearman ρ = {s['rho']:+.2f}{interval} (n = {s['n']})", fontsize=8)
        else:
            ax.set_title(f"{label_of(metric)}: no data", fontsize=8)
        ax.set(xlabel=xlabel or label_of(x), ylabel=label_of(metric))
    return finish(fig, path, title)
