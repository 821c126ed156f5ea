"""Loss-landscape comparisons across nets (Li et al. 2018's depth series): one colour scale per figure.

    plot_contour_grid     filled log-scale contours of several 2-D surfaces, one shared LogNorm and colour bar
    plot_surface_3d_grid  the same surfaces as 3-D meshes of log10 loss, one shared z range (never clipped)
    plot_value_maps       small grids of a value (Li's |λmin/λmax|) per net, one shared log colour scale
    plot_family_series    a statistic against a setting (depth) per net family and variant, with intervals
    plot_family_curves    1-D curves (loss along a direction) per family and variant: mean with a band

Inputs are plain arrays and dicts. `panels` map a panel title to its data; `styles` map a series label to
(family, variant), drawn with `family_styles` (family by colour, variant by line style). Every legend says n
and what the band or bar is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plots.style import PathLike, family_styles, finish, grid, plain_log_ticks, styled


def _shared_log_range(surfaces: Sequence[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([s[np.isfinite(s) & (s > 0)].ravel() for s in surfaces])
    if not finite.size:
        raise LandscapeError("no finite positive loss to draw")
    return float(finite.min()), float(finite.max())


@styled
def plot_contour_grid(panels: Mapping[str, tuple[Any, Any]], path: PathLike | None = None, *, ncols: int = 3,
                      points: Sequence[Sequence[float]] | None = None, levels: int = 25,
                      title: str | None = None) -> Figure:
    """Filled contours of several surfaces on ONE logarithmic colour scale.

    Args:
        panels: title → (axis [n], loss [n, n]) with loss[i, j] at (axis[j], axis[i]).
        path: save as PATH.png and PATH.pdf.
        ncols: panels per row.
        points: (a, b) coordinates marked on every panel (e.g. where a Hessian map was measured).
        levels: contour levels, log-spaced over the range shared by all panels.
        title: figure title.

    Returns:
        The figure; its colour bar is labelled "loss (log scale)".
    """
    lo, hi = _shared_log_range([np.asarray(z, float) for _, z in panels.values()])
    norm = LogNorm(lo, hi)
    lv = np.geomspace(lo, hi * (1 + 1e-9), levels)
    fig, axes = grid(len(panels), ncols, 2.7, 2.4, sharex=True, sharey=True)
    cs = None
    for ax, (name, (axis, loss)) in zip(axes, panels.items()):
        x = np.asarray(axis, float)
        z = np.clip(np.asarray(loss, float), lo, hi)
        cs = ax.contourf(x, x, z, levels=lv, norm=norm, cmap="viridis")
        ax.contour(x, x, z, levels=lv[::3], colors="white", linewidths=0.3, alpha=0.6)
        if points is not None:
            p = np.asarray(points, float)
            ax.plot(p[:, 0], p[:, 1], "+", color="red", ms=5, mew=1)
        ax.set_title(name, fontsize=8)
        ax.set_aspect("equal")
    for ax in axes[-ncols:]:
        ax.set_xlabel("direction 1")
    for ax in axes[::ncols]:
        ax.set_ylabel("direction 2")
    decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
    fig.colorbar(cs, ax=axes, label="loss (log scale)", shrink=0.8, ticks=decades[(decades >= lo) & (decades <= hi)],
                 format="%g")
    return finish(fig, path, title)


@styled
def plot_surface_3d_grid(panels: Mapping[str, tuple[Any, Any]], path: PathLike | None = None, *, ncols: int = 3,
                         title: str | None = None) -> Figure:
    """3-D meshes of log10 loss with one z range and colour scale for all panels (nothing clipped).

    Args:
        panels: title → (axis [n], loss [n, n]).
        path: save as PATH.png and PATH.pdf.
        ncols: panels per row.
        title: figure title.

    Returns:
        The figure.
    """
    lo, hi = _shared_log_range([np.asarray(z, float) for _, z in panels.values()])
    zlo, zhi = np.log10(lo), np.log10(hi)
    n = len(panels)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.0 * min(n, ncols), 2.8 * nrows), layout="constrained")
    for k, (name, (axis, loss)) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, min(n, ncols), k + 1, projection="3d")
        x = np.asarray(axis, float)
        X, Y = np.meshgrid(x, x)
        Z = np.log10(np.maximum(np.asarray(loss, float), lo))
        ax.plot_surface(X, Y, Z, cmap="viridis", vmin=zlo, vmax=zhi, linewidth=0, antialiased=True)
        ax.set_zlim(zlo, zhi)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("dir. 1", fontsize=7)
        ax.set_ylabel("dir. 2", fontsize=7)
        ax.set_zlabel("log10 loss", fontsize=7)
        ax.tick_params(labelsize=6)
    return finish(fig, path, title)


@styled
def plot_value_maps(panels: Mapping[str, tuple[Any, Any]], path: PathLike | None = None, *, ncols: int = 3,
                    floor: float = 1e-3, label: str = "|λmin / λmax|", note: str = "",
                    title: str | None = None) -> Figure:
    """Small maps of a positive value on a grid (Li et al.'s non-convexity map), one shared log colour scale,
    each cell annotated with its value.

    Args:
        panels: title → (axis [m], values [m, m]) with values[i, j] at (axis[j], axis[i]).
        path: save as PATH.png and PATH.pdf.
        ncols: panels per row.
        floor: values below it are drawn at it (the measurement's resolution).
        label: colour bar label (", log scale" is appended).
        note: appended to each panel title (e.g. "geometric mean of n = 5 seeds").
        title: figure title.

    Returns:
        The figure.
    """
    vals = [np.maximum(np.asarray(v, float), floor) for _, v in panels.values()]
    hi = max(float(np.nanmax(v)) for v in vals)
    norm = LogNorm(floor, max(hi, 10 * floor))
    fig, axes = grid(len(panels), ncols, 2.4, 2.2)
    im = None
    for ax, (name, (axis, _)), v in zip(axes, panels.items(), vals):
        a = np.asarray(axis, float)
        m = len(a)
        im = ax.imshow(v, origin="lower", cmap="magma", norm=norm, extent=(-0.5, m - 0.5, -0.5, m - 0.5))
        for i in range(m):
            for j in range(m):
                ax.text(j, i, f"{v[i, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="white" if v[i, j] < np.sqrt(floor * norm.vmax) else "black")
        ax.set_xticks(range(m), [f"{t:g}" for t in a], fontsize=6)
        ax.set_yticks(range(m), [f"{t:g}" for t in a], fontsize=6)
        ax.set_title(f"{name}{note}", fontsize=7)
        ax.grid(False)
    decades = 10.0 ** np.arange(np.floor(np.log10(floor)), np.ceil(np.log10(norm.vmax)) + 1)
    fig.colorbar(im, ax=axes, label=f"{label}, log scale", shrink=0.8, format="%g",
                 ticks=decades[(decades >= floor) & (decades <= norm.vmax)])
    return finish(fig, path, title)


@styled
def plot_family_series(series: Mapping[str, Mapping[str, Any]], styles: Mapping[str, tuple[str, str]],
                       path: PathLike | None = None, *, xlabel: str = "depth", ylabels: Sequence[str] = (),
                       keys: Sequence[str] = (), log: Sequence[bool] = (), band: str = "95% CI",
                       title: str | None = None) -> Figure:
    """One panel per key: each series' estimate against x with its interval as error bars.

    Args:
        series: label → {"x": [k], KEY: {"estimate": [k], "low": [k], "high": [k], "n": [k]}, ...}.
        styles: label → (family, variant).
        path: save as PATH.png and PATH.pdf.
        xlabel: the x axis.
        ylabels, keys, log: per panel: its label, its key in each series, and a log y axis.
        band: what the bars are, for the legend ("95% CI", "SD", ...).
        title: figure title.

    Returns:
        The figure.
    """
    look = family_styles(styles)
    fig, axes = grid(len(keys), len(keys), 3.0, 2.5)
    for ax, key, ylabel, lg in zip(axes, keys, ylabels, log):
        for label, s in series.items():
            x = np.asarray(s["x"], float)
            v = s[key]
            est, lo, hi = (np.asarray(v[k], float) for k in ("estimate", "low", "high"))
            err = np.vstack([np.where(np.isfinite(lo), est - lo, 0), np.where(np.isfinite(hi), hi - est, 0)])
            n = min(v["n"]) if len(v["n"]) else 0
            st = look[label]
            ax.errorbar(x, est, yerr=err, color=st["color"], ls=st["ls"], marker=st.get("marker", "o"), ms=4,
                        mfc=st.get("mfc"), capsize=2, lw=1.2, label=f"{label} (n={n}, bars {band})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if lg:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.set_xticks(np.unique(np.concatenate([np.asarray(s["x"], float) for s in series.values()])))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 2), fontsize=7)
    return finish(fig, path, title)


@styled
def plot_family_curves(panels: Mapping[str, Mapping[str, Any]], styles: Mapping[str, tuple[str, str]],
                       path: PathLike | None = None, *, xlabel: str = "coordinate", ylabel: str = "loss",
                       log: bool = True, title: str | None = None) -> Figure:
    """One panel per setting: per series the mean curve over seeds with a ± SD band (geometric on a log axis).

    Args:
        panels: title → {label: (x [k], values [seeds, k])}.
        styles: label → (family, variant).
        path: save as PATH.png and PATH.pdf.
        xlabel, ylabel: the axes.
        log: log y axis; the mean and SD are then those of log10 of the values.
        title: figure title.

    Returns:
        The figure.
    """
    look = family_styles(styles)
    fig, axes = grid(len(panels), len(panels), 3.0, 2.5, sharey=True)
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, (x, vals) in curves.items():
            v = np.asarray(vals, float)
            v = np.log10(np.maximum(v, np.finfo(float).tiny)) if log else v
            mean, sd = np.nanmean(v, 0), (np.nanstd(v, 0, ddof=1) if len(v) > 1 else np.zeros(v.shape[1]))
            lo, mid, hi = (mean - sd, mean, mean + sd)
            if log:
                lo, mid, hi = 10**lo, 10**mid, 10**hi
            st = look[label]
            ax.plot(x, mid, color=st["color"], ls=st["ls"], lw=1.3,
                    label=f"{label} (n={len(v)}, band ± SD{' of log10' if log else ''})")
            ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel)
        if log:
            ax.set_yscale("log")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=6)
    return finish(fig, path, title)
