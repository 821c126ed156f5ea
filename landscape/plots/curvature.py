"""Curvature during training (docs/methods.md §G): Cohen et al.'s edge-of-stability figures.

    plot_eos            per row (a net, a loss, an optimizer): the training loss and the sharpness side by
                        side, one colour per step size η with its stability limit as a dashed line
    plot_edge_summary   the per-cell edge ratio (sharpness over the limit after the edge is reached) against
                        the step size, with log-scale intervals and the band counted as "at the edge"

Inputs are plain data: `rows` map a row title to {η: (steps [T], loss [seeds, T], sharpness [seeds, T],
limit)}, NaN where a seed has no value (it diverged, or the sharpness was not measured there).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from landscape.plots.style import (
    LINE_STYLES,
    MARKERS,
    OKABE_ITO,
    PathLike,
    finish,
    grid,
    plain_log_ticks,
    ramp,
    styled,
)


def _log_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mean over seeds and the ± 1 SD band of log10 (NaN-aware, per column)."""
    v = np.log10(np.where(values > 0, values, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)           # columns with no finite value give NaN
        mean = np.nanmean(v, 0)
        sd = np.nanstd(v, 0, ddof=1) if len(v) > 1 else np.zeros(v.shape[1])
    sd = np.where(np.isfinite(sd), sd, 0.0)
    return 10 ** (mean - sd), 10**mean, 10 ** (mean + sd)


@styled
def plot_eos(rows: Mapping[str, Mapping[float, tuple[Any, Any, Any, float]]], path: PathLike | None = None, *,
             sharpness_label: str = r"sharpness $\lambda_{max}$", limit_label: str = "2/η",
             title: str | None = None) -> Figure:
    """Loss (left) and sharpness (right) of each row side by side, log axes, one colour per η.

    Args:
        rows: row title → {η: (steps [T], loss [seeds, T], sharpness [seeds, T], limit)}; `limit` is the
            stability limit drawn as a dashed line of η's colour (2/η for GD, (2 + 2β₁)/((1 − β₁)η) for Adam).
        path: save as PATH.png and PATH.pdf.
        sharpness_label, limit_label: the right panels' axis label and the limit's name in the legend.
        title: figure title.

    Returns:
        The figure. Lines are the geometric mean over seeds, bands ± 1 SD of log10 (the legend says n).
    """
    fig, axes = grid(2 * len(rows), 2, 3.6, 2.4)
    for r, (name, cells) in enumerate(rows.items()):
        ax_loss, ax_sharp = axes[2 * r], axes[2 * r + 1]
        colors = ramp(len(cells), "plasma", 0.85)
        for color, (lr, (steps, loss, sharp, limit)) in zip(colors, sorted(cells.items())):
            x = np.asarray(steps, float)
            for ax, vals in ((ax_loss, np.asarray(loss, float)), (ax_sharp, np.asarray(sharp, float))):
                lo, mid, hi = _log_band(vals)
                ok = np.isfinite(mid)
                ax.plot(x[ok], mid[ok], color=color, lw=1.2,
                        label=f"η = {lr:.3g} (n={len(vals)}, band ± SD of log10)" if ax is ax_loss else None)
                ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.18, lw=0)
            ax_sharp.axhline(limit, color=color, ls="--", lw=1, label=f"{limit_label} = {limit:.3g}")
        for ax in (ax_loss, ax_sharp):
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
            ax.set_xlabel("step")
        ax_loss.set_ylabel("training loss")
        ax_sharp.set_ylabel(sharpness_label)
        ax_loss.set_title(f"{name}: loss", fontsize=8)
        ax_sharp.set_title(f"{name}: sharpness", fontsize=8)
        ax_loss.legend(fontsize=5.5, loc="lower left")
        ax_sharp.legend(fontsize=5.5, loc="lower right", ncol=2)
    return finish(fig, path, title)


@styled
def plot_edge_summary(series: Mapping[str, Mapping[str, Sequence[float]]], styles: Mapping[str, tuple[int, int]],
                      path: PathLike | None = None, *, band: tuple[float, float] = (0.8, 1.25),
                      xlabel: str = "η · λ₀ / 2 (the step size over the limit at initialization)",
                      ylabel: str = "edge ratio (median after reaching 0.9)", title: str | None = None) -> Figure:
    """Each series' geometric-mean edge ratio against x with its 95% log-t interval; the band is shaded.

    Args:
        series: label → {"x": [k], "estimate": [k], "low": [k], "high": [k], "n": [k]}.
        styles: label → (family index, variant index): colour by family, line style and marker by variant.
        path: save as PATH.png and PATH.pdf.
        band: the interval of ratios counted as "at the edge".
        xlabel, ylabel: the axes.
        title: figure title.

    Returns:
        The figure (both axes logarithmic).
    """
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.axhspan(*band, color="0.85", zorder=0, label=f"band [{band[0]:g}, {band[1]:g}]")
    ax.axhline(1.0, color="k", lw=0.8)
    for label, s in series.items():
        fam, var = styles[label]
        x, est = np.asarray(s["x"], float), np.asarray(s["estimate"], float)
        lo, hi = np.asarray(s["low"], float), np.asarray(s["high"], float)
        err = np.vstack([np.where(np.isfinite(lo), est - lo, 0), np.where(np.isfinite(hi), hi - est, 0)])
        n = [int(v) for v in s["n"]]
        ax.errorbar(x, est, yerr=err, color=OKABE_ITO[fam % len(OKABE_ITO)], ls=LINE_STYLES[var % len(LINE_STYLES)],
                    marker=MARKERS[var % len(MARKERS)], ms=4, capsize=2, lw=1.2,
                    label=f"{label} (n={min(n) if n else 0}–{max(n) if n else 0} reaching, bars 95% CI, log-t)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6)
    return finish(fig, path, title)
