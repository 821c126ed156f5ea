"""Figures from plain results (dicts, lists of records, numpy arrays), never from models.

Every function draws on a fresh `matplotlib.figure.Figure` (no pyplot state, any backend) in a light
seaborn style, optionally saves it as PATH.png and PATH.pdf (`save_figure`), and returns it so a
notebook can show it. Inputs are what `landscape.experiment` writes (runs/NAME/CELL/seedS/):

    training        plot_training_curves        metrics.jsonl rows, one run or several seeds per label
    Hessian         plot_spectral_density       SLQ density on a linear λ grid, log density axis (Ghorbani 2019)
                    plot_log_spectral_density   density over log10|λ|, positive and negative parts (Papyan 2020)
                    plot_spectrum_mass          degenerate / negative mass and λmax over training (SPEC A.2)
                    plot_eigenvalue_histogram   exact eigenvalues on a symlog axis
    probes          plot_grad_ratio             r_l = ‖∂L/∂x_l‖ / ‖∂L/∂x_{l+1}‖ per block, log axis (SPEC C.4)
                    plot_grad_ratio_grid        the same, one panel per run
                    plot_stream, plot_stream_compare   SPEC B.3 statistics vs step, with the transition point
                    plot_singularity, plot_singularity_compare   SPEC A.2 unit statistics vs epoch
    summaries       plot_sweep                  a final value against a swept setting (λ, K, depth)
                    plot_metric_scatter         one metric against others across runs, with Spearman ρ

Probe records are dicts {"block", "metric", "value", "step"[, "epoch"]} (`landscape.probes`); a missing
metric is a `LandscapeError` naming it.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from landscape.errors import LandscapeError

PathLike = str | os.PathLike

# readable axis labels of the probe metrics (SPEC A.2, B.3, C.4)
LABELS = {
    "x_norm2": r"stream norm $\|x\|^2$",
    "f_par_norm2": r"parallel energy $\|f_\parallel\|^2$",
    "f_ortho_norm2": r"orthogonal energy $\|f_\perp\|^2$",
    "rho_par": r"$\|f_\parallel\|^2 / \|x\|^2$",
    "rho_ortho": r"$\|f_\perp\|^2 / \|x\|^2$",
    "cos_x_out": r"$\cos(x, f)$",
    "grad_ratio": r"$\|\partial L/\partial x_l\| \,/\, \|\partial L/\partial x_{l+1}\|$",
    "dead_frac": "dead units (fraction)",
    "overlap_act": "mean max activation overlap",
    "overlap_weight": "mean max weight overlap",
    "eff_rank": "effective rank / width",
    "small_sv_frac": r"fraction of $s_k/s_1 < 10^{-3}$",
}


def save_figure(fig: Figure, path: PathLike, dpi: int = 120) -> list[Path]:
    """Write `fig` as PATH.png (`dpi`, quantized to a 256-color palette: 3-4x smaller, no visible change for
    line plots) and PATH.pdf (the suffix of `path`, if any, is replaced)."""
    from PIL import Image

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".pdf") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    image = Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    image.save(out[0], optimize=True)
    fig.savefig(out[1], bbox_inches="tight")
    return out


def _styled(fn):
    """Draw inside seaborn's whitegrid style and colorblind palette (rcParams restored afterwards)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib as mpl
        import seaborn as sns
        from cycler import cycler

        palette = cycler(color=sns.color_palette("colorblind"))
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8), \
                mpl.rc_context({"axes.prop_cycle": palette, "legend.frameon": False}):
            return fn(*args, **kwargs)

    return wrapper


def _finish(fig: Figure, path: PathLike | None, title: str | None) -> Figure:
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _palette(labels: Iterable[str], colors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """label → color: `colors` where given, else the colorblind palette in order."""
    import seaborn as sns

    labels = list(labels)
    base = sns.color_palette("colorblind", max(len(labels), 1))
    return {lab: (colors or {}).get(lab, base[i % len(base)]) for i, lab in enumerate(labels)}


def _plain_log_ticks(axis) -> None:
    """Log axis of ratios near 1: ticks at 1, 2, 5 × 10^k labelled as plain numbers (0.5, 1, 2), no minor labels."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _ramp(n: int, cmap: str = "viridis") -> list:
    return [colormaps[cmap](i / max(n - 1, 1)) for i in range(n)]


def _grid(n: int, ncols: int, width: float, height: float, **kw) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# ---- training ----

def _seed_stack(runs: Sequence[Sequence[Mapping]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values[seeds, epochs]) with NaN where a seed has no record (e.g. it diverged earlier)."""
    epochs = sorted({r["epoch"] for rec in runs for r in rec})
    pos = {e: i for i, e in enumerate(epochs)}
    vals = np.full((len(runs), len(epochs)), np.nan)
    for s, rec in enumerate(runs):
        for r in rec:
            if r.get(key) is not None:
                vals[s, pos[r["epoch"]]] = r[key]
    return np.array(epochs, dtype=float), vals


def _is_seeds(value) -> bool:
    return bool(value) and not isinstance(value[0], Mapping)


@_styled
def plot_training_curves(histories: Mapping[str, Sequence], path: PathLike | None = None, *,
                         title: str | None = None, log_loss: bool = True, test: bool = False,
                         colors: Mapping[str, Any] | None = None) -> Figure:
    """Training loss and training accuracy against epoch, one line per run.

    histories: label → per-epoch records with "epoch", "train_loss", "train_acc" (metrics.jsonl lines), or
    label → a list of such lists (one per seed): drawn as the mean over seeds with a min–max band.
    test: also draw "test_acc" (dashed) in the accuracy panel.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    color = _palette(histories, colors)
    for name, runs in histories.items():
        runs = runs if _is_seeds(runs) else [runs]
        for ax, key, style in ((ax_loss, "train_loss", "-"), (ax_acc, "train_acc", "-"),
                               (ax_acc, "test_acc", "--")):
            if key == "test_acc" and not test:
                continue
            epochs, vals = _seed_stack(runs, key)
            with np.errstate(all="ignore"):
                mean = np.nanmean(vals, axis=0) if len(runs) > 1 else vals[0]
            label = name if key != "test_acc" else f"{name} (test)"
            ax.plot(epochs, mean, ls=style, lw=1.8, color=color[name], label=label)
            if len(runs) > 1:
                with np.errstate(all="ignore"):
                    ax.fill_between(epochs, np.nanmin(vals, axis=0), np.nanmax(vals, axis=0),
                                    color=color[name], alpha=0.2, lw=0)
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    if log_loss:
        ax_loss.set_yscale("log")
        _plain_log_ticks(ax_loss.yaxis)
    top = max((float(np.nanmax(ln.get_ydata())) for ln in ax_acc.lines if np.isfinite(ln.get_ydata()).any()),
              default=1.0)
    ax_acc.set(xlabel="epoch", ylabel="training accuracy" if not test else "accuracy (dashed: test)",
               title="accuracy", ylim=(0, min(1.02, 1.1 * top + 0.02)))
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside right center", fontsize=7)
    return _finish(fig, path, title)


# ---- Hessian spectra ----

def _density(spectrum):
    """A `SpectralDensity` from one, or from a mapping with nodes/weights (or the NPZ's slq_nodes/slq_weights)."""
    from landscape.hessian.spectrum import SpectralDensity

    if isinstance(spectrum, SpectralDensity):
        return spectrum
    for nodes, weights in (("nodes", "weights"), ("slq_nodes", "slq_weights")):
        if nodes in spectrum and weights in spectrum:
            n = np.atleast_2d(np.asarray(spectrum[nodes], dtype=np.float64))
            w = np.atleast_2d(np.asarray(spectrum[weights], dtype=np.float64))
            return SpectralDensity(n, w, int(spectrum.get("dim", n.shape[1])))
    raise LandscapeError(f"a spectrum needs nodes and weights (or slq_nodes and slq_weights), got keys "
                         f"{sorted(spectrum)}")


@_styled
def plot_spectral_density(spectra: Mapping[str, Any], path: PathLike | None = None, *, eps: float = 1e-3,
                          n_grid: int = 4000, floor: float = 1e-7, title: str | None = None,
                          colors: Mapping[str, Any] | None = None) -> Figure:
    """SLQ spectral densities on one linear λ grid with a log density axis (Ghorbani et al. 2019, Fig. 1 style).

    spectra: label → a `SpectralDensity` or a mapping with nodes/weights [probes, iters].
    Each density is broadened by σ = max(σ_default, 1.5 Δλ) (σ_default² = 1e-5 (λmax − λmin), PyHessian's
    choice; Δλ the grid step) so no Ritz node falls between grid points; densities are clipped below at
    `floor` × the highest peak. The legend gives each spectrum's degenerate mass μ(|λ| < ε λmax).
    """
    sds = {k: _density(v) for k, v in spectra.items()}
    if not sds:
        raise LandscapeError("no spectra to plot")
    lo = min(sd.lambda_min for sd in sds.values())
    hi = max(sd.lambda_max for sd in sds.values())
    pad = 0.02 * (hi - lo) or 1.0
    grid = np.linspace(lo - pad, hi + pad, n_grid)
    step = grid[1] - grid[0]
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    color = _palette(sds, colors)
    curves = {k: sd.density(grid, max(sd.default_sigma(), 1.5 * step))[1] for k, sd in sds.items()}
    top = max(float(c.max()) for c in curves.values())
    for k, d in curves.items():
        ax.plot(grid, np.maximum(d, floor * top), color=color[k], lw=1.3,
                label=f"{k} (degenerate {sds[k].degenerate_ratio(eps):.2f})")
    ax.set_yscale("log")
    ax.set_ylim(floor * top, 2 * top)
    ax.set(xlabel=r"eigenvalue $\lambda$", ylabel="density (log scale)")
    ax.legend(fontsize=7, title=rf"degenerate: $|\lambda| < {eps:g}\,\lambda_{{max}}$", title_fontsize=7)
    return _finish(fig, path, title or "Hessian spectral density (SLQ)")


@_styled
def plot_log_spectral_density(spectra: Mapping[str, Any], path: PathLike | None = None, *, sigma: float = 0.05,
                              n_grid: int = 600, floor: float = 1e-6, title: str | None = None,
                              colors: Mapping[str, Any] | None = None) -> Figure:
    """Densities over u = log10|λ| (Papyan 2020 style): the λ > 0 part and the λ < 0 part in two panels,
    one line per spectrum, |λ| on a log x axis and density per unit log10|λ| on a log y axis.

    sigma: broadening in log10 units. Nodes with |λ| ≤ 1e-6 λmax are left out (`SpectralDensity.log_density`),
    so each panel's integral is the mass of that sign above the floor.
    """
    sds = {k: _density(v) for k, v in spectra.items()}
    if not sds:
        raise LandscapeError("no spectra to plot")
    us = [np.log10(np.abs(sd.nodes[np.abs(sd.nodes) > 1e-6 * sd.scale])) for sd in sds.values()]
    us = np.concatenate([u for u in us if u.size]) if any(u.size for u in us) else np.zeros(1)
    u = np.linspace(us.min() - 5 * sigma, us.max() + 5 * sigma, n_grid)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_pos, ax_neg = fig.subplots(1, 2, sharey=True)
    color = _palette(sds, colors)
    parts = {k: sd.log_density(u, sigma=sigma)[1:] for k, sd in sds.items()}
    top = max(max(float(p.max()), float(n.max())) for p, n in parts.values()) or 1.0
    for k, (pos, neg) in parts.items():
        for ax, d, mass in ((ax_pos, pos, sds[k].mass(lo=0.0)), (ax_neg, neg, sds[k].mass(hi=0.0))):
            if d.max() > floor * top:
                ax.plot(10**u, np.maximum(d, floor * top), color=color[k], lw=1.3, label=f"{k} (mass {mass:.2f})")
    for ax, sign in ((ax_pos, "> 0"), (ax_neg, "< 0")):
        ax.set(xscale="log", yscale="log", xlabel=r"$|\lambda|$", title=rf"$\lambda {sign}$")
        ax.set_ylim(floor * top, 2 * top)
        if ax.lines:
            ax.legend(fontsize=7)
    ax_pos.set_ylabel(r"density per unit $\log_{10}|\lambda|$")
    return _finish(fig, path, title or r"Hessian spectral density over $\log_{10}|\lambda|$ (SLQ)")


@_styled
def plot_spectrum_mass(runs: Mapping[str, Sequence[Mapping]], path: PathLike | None = None, *,
                       title: str | None = None, colors: Mapping[str, Any] | None = None) -> Figure:
    """Degenerate mass μ(|λ| < ε λmax), negative mass μ(λ < −ε λmax) and λmax against epoch (SPEC A.2).

    runs: label → spectrum.jsonl rows {"epoch", "spectrum": {...}, "exact": {...}} (either part optional):
    SLQ estimates are lines with filled markers, exact spectra hollow markers of the same color.
    """
    keys = (("degenerate_ratio", "degenerate mass"), ("negative_ratio", "negative mass"),
            ("lambda_max", r"$\lambda_{max}$"))
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    axes = fig.subplots(1, 3)
    color = _palette(runs, colors)
    for name, rows in runs.items():
        for ax, (key, _) in zip(axes, keys):
            for part, style in (("spectrum", dict(marker="o", ms=4, lw=1.5)),
                                ("exact", dict(marker="s", ms=7, ls="none", mfc="none", mew=1.5))):
                pts = sorted((r["epoch"], r[part][key]) for r in rows
                             if r.get(part, {}).get(key) is not None)
                if pts:
                    label = name if part == "spectrum" or not any(r.get("spectrum") for r in rows) else None
                    ax.plot(*zip(*pts), color=color[name], label=label, **style)
    for ax, (key, label) in zip(axes, keys):
        ax.set(xlabel="epoch", ylabel=label, title=label)
        if key == "lambda_max":
            ax.set_yscale("log")
    if not any(ax.lines for ax in axes):
        raise LandscapeError("no spectrum or exact records to plot")
    axes[0].legend(fontsize=7, title="lines: SLQ, squares: exact", title_fontsize=7)
    return _finish(fig, path, title)


@_styled
def plot_eigenvalue_histogram(eigenvalues: Mapping[str, np.ndarray], path: PathLike | None = None, *,
                              eps: float = 1e-3, floor: float = 1e-7, bins_per_decade: int = 4,
                              title: str | None = None, colors: Mapping[str, Any] | None = None) -> Figure:
    """Histograms of exact Hessian eigenvalues on a symlog λ axis, one step outline per net.

    With λ* = the largest λmax of the nets, the axis is linear within ±floor·λ* (one bin: numerically zero)
    and logarithmic outside, `bins_per_decade` bins per decade and sign; y is the fraction of eigenvalues
    per bin. The degenerate band |λ| < ε·λ* is shaded; the legend gives each net's degenerate and negative
    fractions at ε relative to its own λmax (SPEC A.2).
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
    color = _palette(eig, colors)
    for k, v in eig.items():
        own = v.max() if v.max() > 0 else np.abs(v).max()
        degenerate, negative = np.mean(np.abs(v) < eps * own), np.mean(v < -eps * own)
        counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
        ax.stairs(counts / v.size, edges, color=color[k], lw=1.4,
                  label=f"{k}: degenerate {degenerate:.2f}, negative {negative:.3f}")
    ax.set_xscale("symlog", linthresh=zero, linscale=0.5)
    lo = math.ceil(np.log10(zero)) + 1
    pos = [10.0**k for k in range(lo, math.floor(np.log10(big)) + 1, 2)]
    neg = [-t for t in pos if t <= neg_top * 1.001]
    ax.set_xticks([*neg[::-1], 0.0, *pos])
    ax.set_yscale("log")
    ax.set(xlabel=r"eigenvalue $\lambda$ (symlog)", ylabel="fraction of eigenvalues per bin")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7, ncols=2,
               title=rf"shaded: $|\lambda| < {eps:g}\,\lambda_{{max}}$ (degenerate)", title_fontsize=7)
    return _finish(fig, path, title or "exact Hessian eigenvalues")


# ---- probe records ----

def _select(records: Iterable[dict], metric: str) -> list[dict]:
    rows = [r for r in records if r["metric"] == metric]
    if not rows:
        raise LandscapeError(f"no {metric!r} records to plot")
    return rows


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
    grid = sorted({v for xs, _ in series.values() for v in xs.tolist()})
    with np.errstate(all="ignore"):
        mean = [np.nanmean([ys[xs == g][0] for xs, ys in series.values() if (xs == g).any()]) for g in grid]
    return np.array(grid), np.array(mean)


def _draw_grad_ratio(ax, records: list[dict], at: Sequence | None, key: str, legend: bool) -> None:
    rows = _select(records, "grad_ratio")
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    at = list(dict.fromkeys(r.get(key) for r in rows)) if at is None else list(at)
    pos = {b: i for i, b in enumerate(blocks)}
    for color, when in zip(_ramp(len(at)), at):
        pts = sorted((pos[r["block"]], r["value"]) for r in rows if r.get(key) == when)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, color=color, label=f"{key} {when}")
        for metric, style in (("jac_sigma_max", "--"), ("jac_sigma_min", ":")):
            bound = sorted((pos[r["block"]], r["value"]) for r in records
                           if r["metric"] == metric and r.get(key) == when and r["block"] in pos)
            if bound:
                ax.plot(*zip(*bound), ls=style, color=color, lw=1, label=f"{metric[4:]} ({key} {when})")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    every = max(1, math.ceil(len(blocks) / 12))  # at most ~12 labelled blocks
    ax.set_xticks(range(0, len(blocks), every))
    ax.set_xticklabels(blocks[::every], rotation=90, fontsize=7)
    ax.set_xlabel("block")
    if legend and len(at) <= 8:
        ax.legend(fontsize=7)


@_styled
def plot_grad_ratio(records: Iterable[dict], steps: Sequence | None = None, title: str | None = None, *,
                    key: str = "step", path: PathLike | None = None) -> Figure:
    """Gradient-norm ratio per block (log y, 1 = norm preserved), one line per step or epoch (`key`),
    with the Jacobian bounds [σ_min, σ_max] of SPEC C.1 when the records hold them (SPEC C.4's figure).

    steps: the values of `key` to draw (default: all, in first-seen order).
    """
    records = list(records)
    n_blocks = len({r["block"] for r in _select(records, "grad_ratio")})
    fig = Figure(figsize=(max(5.0, 0.18 * n_blocks + 3), 3.6), layout="constrained")
    ax = fig.add_subplot()
    _draw_grad_ratio(ax, records, steps, key, legend=True)
    ax.set_ylabel(LABELS["grad_ratio"])
    ax.set_title(title or "gradient-norm ratio per block")
    return _finish(fig, path, None)


@_styled
def plot_grad_ratio_grid(runs: Mapping[str, Iterable[dict]], at: Sequence | None = None, *, key: str = "epoch",
                         ncols: int = 4, path: PathLike | None = None, title: str | None = None) -> Figure:
    """`plot_grad_ratio` for several runs: one panel per run (shared log y), one line per `key` value in `at`
    (color from early, dark, to late, yellow)."""
    if not runs:
        raise LandscapeError("no runs to plot")
    fig, axes = _grid(len(runs), ncols, 3.4, 3.0, sharey=True)
    for i, (ax, (name, records)) in enumerate(zip(axes, runs.items())):
        _draw_grad_ratio(ax, list(records), at, key, legend=i == 0)
        ax.set_title(name, fontsize=9)
    for ax in axes[:: max(1, min(ncols, len(axes)))]:
        ax.set_ylabel(LABELS["grad_ratio"])
    return _finish(fig, path, title)


def _transition(records: list[dict]) -> tuple[float, float] | None:
    """SPEC B.3 [TD]: (step, value) of the largest ‖x‖² at the last stream site."""
    series = _series([r for r in records if r["metric"] == "x_norm2"], "step")
    if not series:
        return None
    xs, ys = list(series.values())[-1]
    finite = np.isfinite(ys)
    if not finite.any():
        return None
    i = int(np.nanargmax(np.where(finite, ys, -np.inf)))
    return float(xs[i]), float(ys[i])


def _draw_stream(axes, records: list[dict], metrics: Sequence[str], blocks: Sequence[str] | None, logy: bool,
                 transition: bool) -> None:
    mark = _transition(records) if transition else None
    for ax, metric in zip(axes, metrics):
        series = _series(_select(records, metric), "step")
        names = [b for b in series if blocks is None or b in blocks]
        for color, name in zip(_ramp(len(names), "plasma"), names):
            ax.plot(*series[name], color=color, lw=1.2, label=name)
        if logy:
            ax.set_yscale("log")
        if mark is not None:
            ax.axvline(mark[0], color="k", ls="--", lw=0.9, label=f"transition point (step {mark[0]:g})")
        ax.set_xlabel("step")
        ax.set_ylabel(LABELS.get(metric, metric))


@_styled
def plot_stream(records: Iterable[dict], metrics: Sequence[str] = ("x_norm2", "f_par_norm2", "f_ortho_norm2",
                                                                   "cos_x_out"),
                blocks: Sequence[str] | None = None, logy: bool = False, *, transition: bool = False,
                path: PathLike | None = None, title: str | None = None) -> Figure:
    """Stream statistics (SPEC B.3) against step, one panel per metric, one line per site (color = depth).

    transition: mark the transition point argmax_t ‖x‖²(t) at the last site (dashed line in every panel).
    """
    records = list(records)
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    _draw_stream(axes, records, metrics, blocks, logy, transition)
    for ax, metric in zip(axes, metrics):
        ax.set_title(metric)
    if len(axes[0].lines) <= 12:
        axes[0].legend(fontsize=7)
    return _finish(fig, path, title)


@_styled
def plot_stream_compare(runs: Mapping[str, Iterable[dict]], metrics: Sequence[str] = ("x_norm2", "f_par_norm2",
                                                                                      "f_ortho_norm2"),
                        blocks: Sequence[str] | None = None, logy: bool = True, *, transition: bool = True,
                        path: PathLike | None = None, title: str | None = None) -> Figure:
    """SPEC B.3 statistics for several runs: one row per run, one column per metric (shared y per column),
    one line per site, the transition point of each run marked (the ortho-residual project page's figures)."""
    if not runs:
        raise LandscapeError("no runs to plot")
    fig = Figure(figsize=(4.0 * len(metrics), 2.8 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), len(metrics), squeeze=False, sharex=True, sharey="col")
    for row, (name, records) in zip(axes, runs.items()):
        _draw_stream(row, list(records), metrics, blocks, logy, transition)
        for ax in row[1:]:
            ax.set_ylabel("")
        row[0].set_ylabel(f"{name}\n{LABELS.get(metrics[0], metrics[0])}")
    for ax, metric in zip(axes[0], metrics):
        ax.set_title(LABELS.get(metric, metric))
    axes[0][-1].legend(fontsize=6, loc="best")
    return _finish(fig, path, title)


@_styled
def plot_singularity(records: Iterable[dict], metrics: Sequence[str] = ("dead_frac", "overlap_act", "eff_rank",
                                                                        "small_sv_frac"),
                     x: str = "epoch", *, path: PathLike | None = None, title: str | None = None) -> Figure:
    """Singularity statistics (SPEC A.2) against `x` ("epoch" when the records carry it, else "step"),
    per block (thin, color = depth) and averaged over blocks (black)."""
    records = list(records)
    if x == "epoch" and not any("epoch" in r for r in records):
        x = "step"
    fig = Figure(figsize=(4.0 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = _series(_select(records, metric), x)
        for color, (xs, ys) in zip(_ramp(len(series)), series.values()):
            ax.plot(xs, ys, color=color, lw=0.8, alpha=0.7)
        ax.plot(*_block_mean(records, metric, x), color="k", lw=2, label="mean over blocks")
        ax.set_xlabel(x)
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(metric)
    axes[0].legend(fontsize=7)
    return _finish(fig, path, title)


@_styled
def plot_singularity_compare(runs: Mapping[str, Iterable[dict]],
                             metrics: Sequence[str] = ("dead_frac", "overlap_act", "eff_rank", "small_sv_frac"),
                             x: str = "epoch", *, path: PathLike | None = None, title: str | None = None,
                             colors: Mapping[str, Any] | None = None) -> Figure:
    """SPEC A.2 unit statistics, averaged over blocks, against `x`: one panel per metric, one line per run."""
    if not runs:
        raise LandscapeError("no runs to plot")
    fig = Figure(figsize=(3.6 * len(metrics), 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    color = _palette(runs, colors)
    for name, records in runs.items():
        records = list(records)
        for ax, metric in zip(axes, metrics):
            ax.plot(*_block_mean(records, metric, x), color=color[name], lw=1.6, marker="o", ms=3, label=name)
    for ax, metric in zip(axes, metrics):
        ax.set(xlabel=x, ylabel=LABELS.get(metric, metric), title=metric)
    axes[0].legend(fontsize=7)
    return _finish(fig, path, title)


# ---- summaries across runs ----

def _mean_std(value) -> tuple[float, float]:
    """A number, or per-seed values (None / non-finite dropped) → (mean, sample std or 0); NaN if none is finite."""
    vals = np.array([v for v in (value if isinstance(value, (list, tuple, np.ndarray)) else [value])
                     if v is not None], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return math.nan, math.nan
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0


@_styled
def plot_sweep(panels: Mapping[str, Mapping[str, Mapping[float, Any]]], path: PathLike | None = None, *,
               ylabel: str, xlabel: str | Sequence[str] = "setting", logx: bool = False, logy: bool = False,
               hline: float | None = None, title: str | None = None, colors: Mapping[str, Any] | None = None
               ) -> Figure:
    """A final value against a swept setting: one panel per entry of `panels` (title → lines), one line per
    label (label → {x: value}); a value is a number or per-seed numbers (mean, ± std error bars).

    Settings whose runs left no finite value (diverged) are marked × at the top of the panel. `xlabel` is
    one label or one per panel; `hline` draws a reference level (e.g. 1 for a norm-preserving ratio).
    """
    if not panels:
        raise LandscapeError("no sweep to plot")
    xlabels = [xlabel] * len(panels) if isinstance(xlabel, str) else list(xlabel)
    fig = Figure(figsize=(4.4 * len(panels), 3.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    color = _palette(dict.fromkeys(lab for lines in panels.values() for lab in lines), colors)
    for ax, (panel, lines), xl in zip(axes, panels.items(), xlabels):
        for label, points in lines.items():
            xs = np.array(sorted(points), dtype=float)
            stats = np.array([_mean_std(points[x]) for x in sorted(points)]).reshape(-1, 2)
            ok = np.isfinite(stats[:, 0])
            ax.errorbar(xs[ok], stats[ok, 0], yerr=stats[ok, 1], color=color[label], marker="o", ms=4, lw=1.5,
                        capsize=3, label=label)
            if (~ok).any():
                ax.plot(xs[~ok], np.ones((~ok).sum()), ls="none", marker="x", ms=8, mew=2, color=color[label],
                        transform=ax.get_xaxis_transform(), clip_on=False, label=f"{label}: diverged")
        if hline is not None:
            ax.axhline(hline, color="0.5", lw=0.8)
        ax.set(xlabel=xl, title=panel, xscale="log" if logx else "linear", yscale="log" if logy else "linear")
        ticks = sorted({float(x) for points in lines.values() for x in points})
        if len(ticks) <= 12:  # label the swept values themselves
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
    axes[0].set_ylabel(ylabel)
    return _finish(fig, path, title)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 points or a constant input."""
    from scipy.stats import rankdata

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


@_styled
def plot_metric_scatter(points: Mapping[str, Mapping[str, float | None]], x: str, ys: Sequence[str],
                        path: PathLike | None = None, *, xlabel: str | None = None, title: str | None = None,
                        annotate: bool = True) -> Figure:
    """One panel per metric in `ys` against `x` across runs (label → {metric: value}), each panel titled
    with Spearman's rank correlation ρ over the runs that have both values (SPEC A.4's "lower accuracy goes
    with more singularity")."""
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
            ax.scatter(xs, vs, s=22, color="C0", zorder=3)
            if annotate:
                for lab, a, b in pts:
                    ax.annotate(lab, (a, b), fontsize=6, xytext=(3, 2), textcoords="offset points")
            rho = _spearman(xs, vs)
            ax.set_title(f"{metric}: Spearman ρ = {rho:+.2f} (n = {len(pts)})", fontsize=9)
        else:
            ax.set_title(f"{metric}: no data", fontsize=9)
        ax.set(xlabel=xlabel or x, ylabel=LABELS.get(metric, metric))
    return _finish(fig, path, title)
