"""Hessian spectrum figures from plain data: density curves, mass over training, exact eigenvalue histograms.

A spectrum is drawn from the curves it is given, one plain dict per label (`landscape.hessian.cli.curves.
spectrum_curves` computes them from a spectrum file's nodes and weights):

    log view      "log_grid" (u = log10|λ|), "log_positive", "log_negative" (densities per unit u)
    linear view   "grid" (λ), "density"
    legend        "degenerate_ratio" μ(|λ| < ε λmax), "negative_ratio" μ(λ < −ε λmax), "eps" (ε: the
                  threshold the results report, so a legend never shows another threshold's mass)

The log view (Papyan 2020) is the default: on a linear λ axis an SLQ density of a few hundred Ritz nodes
is a comb of spikes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plots.style import PathLike, finish, line_styles, styled


def _need(spectra: Mapping[str, Mapping], keys: Sequence[str], view: str) -> None:
    if not spectra:
        raise LandscapeError("no spectra to plot")
    for label, s in spectra.items():
        missing = [k for k in keys if k not in s]
        if missing:
            raise LandscapeError(f"spectrum {label!r} has no {', '.join(missing)} for the {view} view "
                                 f"(got keys {sorted(s)}); compute curves with spectrum_curves")


def _legend(label: str, s: Mapping) -> str:
    if "negative_ratio" not in s:
        return label
    eps = s.get("eps", 1e-3)
    deg = f"degenerate {s['degenerate_ratio']:.2f}, " if "degenerate_ratio" in s else ""
    return f"{label}: {deg}negative {s['negative_ratio']:.3f} (ε = {eps:g})"


_THRESHOLD = (r"mass at $|\lambda| < \varepsilon\lambda_{max}$ (degenerate), "
              r"$\lambda < -\varepsilon\lambda_{max}$ (negative)")


@styled
def plot_spectral_density(spectra: Mapping[str, Mapping], path: PathLike | None = None, *, view: str = "log",
                          floor: float | None = None, title: str | None = None,
                          colors: Mapping[str, Any] | None = None, styles: Mapping[str, Mapping] | None = None
                          ) -> Figure:
    """Spectral densities, one line per label: view="log" (default) over log10|λ| in two panels (λ > 0,
    λ < 0); view="linear" on a λ axis with a log density axis (Ghorbani et al. 2019, Fig. 1 style).
    Densities are clipped below at `floor` × the highest peak (1e-6 log view, 1e-7 linear).

    Args:
        spectra: label → `spectrum_curves` output.
        path: where to save (None: not saved).
        view: "log" or "linear".
        floor: the relative clip (None: the view's default).
        title: the figure's title.
        colors: label → colour.
        styles: label → line style dict.

    Returns:
        The figure.
    """
    if view == "log":
        return _log_view(spectra, path, floor=1e-6 if floor is None else floor, title=title, colors=colors,
                         styles=styles)
    if view != "linear":
        raise LandscapeError(f"view must be 'log' or 'linear', got {view!r}")
    _need(spectra, ("grid", "density"), "linear")
    floor = 1e-7 if floor is None else floor
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    style = line_styles(spectra, styles, colors)
    curves = {k: (np.asarray(s["grid"], float), np.asarray(s["density"], float)) for k, s in spectra.items()}
    top = max(float(d.max()) for _, d in curves.values()) or 1.0
    for k, (g, d) in curves.items():
        ax.plot(g, np.maximum(d, floor * top), lw=1.3, label=_legend(k, spectra[k]), **style[k])
    ax.set_yscale("log")
    ax.set_ylim(floor * top, 2 * top)
    ax.set(xlabel=r"eigenvalue $\lambda$", ylabel="density (log scale)")
    ax.legend(fontsize=7, title=_THRESHOLD, title_fontsize=7)
    return finish(fig, path, title or "Hessian spectral density (SLQ)")


def plot_log_spectral_density(spectra: Mapping[str, Mapping], path: PathLike | None = None, *,
                              floor: float = 1e-6, title: str | None = None,
                              colors: Mapping[str, Any] | None = None, styles: Mapping[str, Mapping] | None = None
                              ) -> Figure:
    """`plot_spectral_density(view="log")`: the λ > 0 and λ < 0 parts over |λ| (log x, log density).

    Args:
        spectra: label → `spectrum_curves` output.
        path: where to save (None: not saved).
        floor: the relative clip.
        title: the figure's title.
        colors: label → colour.
        styles: label → line style dict.

    Returns:
        The figure.
    """
    return plot_spectral_density(spectra, path, view="log", floor=floor, title=title, colors=colors, styles=styles)


def _log_view(spectra, path, *, floor, title, colors, styles) -> Figure:
    _need(spectra, ("log_grid", "log_positive", "log_negative"), "log")
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    ax_pos, ax_neg = fig.subplots(1, 2, sharey=True)
    style = line_styles(spectra, styles, colors)
    parts = {k: (np.asarray(s["log_grid"], float), np.asarray(s["log_positive"], float),
                 np.asarray(s["log_negative"], float)) for k, s in spectra.items()}
    top = max(max(float(p.max(initial=0)), float(n.max(initial=0))) for _, p, n in parts.values()) or 1.0
    for k, (u, pos, neg) in parts.items():
        for ax, d in ((ax_pos, pos), (ax_neg, neg)):
            if d.size and d.max() > floor * top:
                ax.plot(10**u, np.maximum(d, floor * top), lw=1.3, label=_legend(k, spectra[k]), **style[k])
    for ax, sign in ((ax_pos, "> 0"), (ax_neg, "< 0")):
        ax.set(xscale="log", yscale="log", xlabel=r"$|\lambda|$ (log scale)", ylabel="density (log scale)",
               title=rf"$\lambda {sign}$")
        ax.set_ylim(floor * top, 2 * top)
    ax_pos.set_ylabel(r"density per unit $\log_{10}|\lambda|$ (log scale)")
    ax_neg.set_ylabel("")
    handles = {}
    for ax in (ax_pos, ax_neg):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:  # one legend for both panels: every label with its masses at the reported threshold
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=7,
                   ncols=min(2, len(handles)), title=_THRESHOLD, title_fontsize=7)
    return finish(fig, path, title or r"Hessian spectral density over $\log_{10}|\lambda|$ (SLQ)")


@styled
def plot_spectrum_mass(runs: Mapping[str, Sequence[Mapping]], path: PathLike | None = None, *,
                       title: str | None = None, colors: Mapping[str, Any] | None = None,
                       styles: Mapping[str, Mapping] | None = None) -> Figure:
    """Degenerate mass μ(|λ| < ε λmax), negative mass μ(λ < −ε λmax) and λmax against epoch (docs/methods.md
    §A.2), at the ε the rows carry (their "eps").

    Args:
        runs: label → spectrum.jsonl rows {"epoch", "spectrum": {...}, "exact": {...}} (either part optional):
            SLQ estimates are lines with filled markers, exact spectra hollow markers of the same colour.
        path: where to save (None: not saved).
        title: the figure's title.
        colors: label → colour.
        styles: label → line style dict.

    Returns:
        The figure.
    """
    eps = {r[p]["eps"] for rows in runs.values() for r in rows for p in ("spectrum", "exact")
           if isinstance(r.get(p), Mapping) and "eps" in r[p]}
    at = f" (ε = {', '.join(f'{e:g}' for e in sorted(eps))})" if eps else ""
    keys = (("degenerate_ratio", r"degenerate mass $\mu(|\lambda| < \varepsilon\lambda_{max})$"),
            ("negative_ratio", r"negative mass $\mu(\lambda < -\varepsilon\lambda_{max})$"),
            ("lambda_max", r"$\lambda_{max}$"))
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    axes = fig.subplots(1, 3)
    style = line_styles(runs, styles, colors)
    for name, rows in runs.items():
        for ax, (key, _) in zip(axes, keys):
            line = {"marker": "o", "ms": 4, "lw": 1.5, **style[name]}
            line.pop("markevery", None)
            for part, kw in (("spectrum", line),
                             ("exact", dict(marker="s", ms=7, ls="none", mfc="none", mew=1.5,
                                            color=style[name]["color"]))):
                pts = sorted((r["epoch"], r[part][key]) for r in rows
                             if (r.get(part) or {}).get(key) is not None)
                if pts:
                    label = name if part == "spectrum" or not any(r.get("spectrum") for r in rows) else None
                    ax.plot(*zip(*pts), label=label, **kw)
    for ax, (key, label) in zip(axes, keys):
        ax.set(xlabel="epoch", ylabel=label, title=label + (at if key != "lambda_max" else ""))
        if key == "lambda_max":
            ax.set_yscale("log")
    if not any(ax.lines for ax in axes):
        raise LandscapeError("no spectrum or exact records to plot")
    axes[0].legend(fontsize=7, title="lines: SLQ, squares: exact", title_fontsize=7)
    return finish(fig, path, title)


@styled
def plot_eigenvalue_histogram(eigenvalues: Mapping[str, np.ndarray], path: PathLike | None = None, *,
                              eps: float = 1e-3, floor: float = 1e-7, bins_per_decade: int = 4,
                              title: str | None = None, colors: Mapping[str, Any] | None = None,
                              styles: Mapping[str, Mapping] | None = None,
                              legend: Mapping[str, str] | None = None) -> Figure:
    """Histograms of exact Hessian eigenvalues on a symlog λ axis, one step outline per net.

    With λ* = the largest λmax of the nets, the axis is linear within ±floor·λ* (one bin: numerically zero)
    and logarithmic outside, `bins_per_decade` bins per decade and sign; y is the fraction of eigenvalues
    per bin. The degenerate band |λ| < ε·λ* is shaded; the legend gives each net's degenerate and negative
    fractions at ε (the reported threshold) relative to its own λmax (docs/methods.md §A.2), or `legend`'s text
    for the label where given (e.g. the masses' mean over seeds that the text reports, when one seed is drawn).

    Args:
        eigenvalues: label → the net's eigenvalues.
        path: where to save (None: not saved).
        eps: ε of the degenerate band.
        floor: the linear zone's half-width relative to λ*.
        bins_per_decade: bins per decade and sign.
        title: the figure's title.
        colors: label → colour.
        styles: label → line style dict.
        legend: label → legend text.

    Returns:
        The figure.
    """
    eig = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in eigenvalues.items()}
    if not eig or any(v.size == 0 for v in eig.values()):
        raise LandscapeError("every net needs at least one eigenvalue to plot")
    big = max(float(np.abs(v).max()) for v in eig.values()) or 1.0
    lam_max = max(float(v.max()) for v in eig.values())
    scale = lam_max if lam_max > 0 else big
    zero = floor * scale

    def side(top: float) -> np.ndarray:  # log-spaced edges from the zero bin to just above `top`
        decades = max(np.log10(max(top, zero) * 1.001 / zero), 1e-3)
        return np.logspace(np.log10(zero), np.log10(zero) + decades, max(2, math.ceil(decades * bins_per_decade)))

    neg_top = max((float(-v.min()) for v in eig.values()), default=0.0)
    edges = np.concatenate([-side(neg_top)[::-1], side(big)])
    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(-eps * scale, eps * scale, color="0.88", lw=0, zorder=0)
    style = line_styles(eig, styles, colors)
    for k, v in eig.items():
        own = v.max() if v.max() > 0 else np.abs(v).max()
        degenerate, negative = np.mean(np.abs(v) < eps * own), np.mean(v < -eps * own)
        counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
        text = (legend or {}).get(k, f"degenerate {degenerate:.2f}, negative {negative:.3f}")
        ax.stairs(counts / v.size, edges, lw=1.4, color=style[k]["color"], linestyle=style[k]["ls"],
                  label=f"{k}: {text}")
    ax.set_xscale("symlog", linthresh=zero, linscale=0.5)
    lo = math.ceil(np.log10(zero)) + 1
    pos = [10.0**k for k in range(lo, math.floor(np.log10(big)) + 1, 2)]
    neg = [-t for t in pos if t <= neg_top * 1.001]
    ax.set_xticks([*neg[::-1], 0.0, *pos])
    ax.set_yscale("log")
    ax.set(xlabel=r"eigenvalue $\lambda$ (symlog)", ylabel="fraction of eigenvalues per bin")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7, ncols=2,
               title=rf"shaded: $|\lambda| < {eps:g}\,\lambda_{{max}}$ (degenerate); negative: "
                     rf"$\lambda < -{eps:g}\,\lambda_{{max}}$", title_fontsize=7)
    return finish(fig, path, title or "exact Hessian eigenvalues")
