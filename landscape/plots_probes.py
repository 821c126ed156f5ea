"""Figures of probe records (`landscape.probes`): plain lists of {step, block, metric, value} dicts in,
matplotlib Figures out (no pyplot state; save with `fig.savefig`).

- `plot_grad_ratio`: r_l = ‖∂L/∂x_l‖ / ‖∂L/∂x_{l+1}‖ against block on a log axis, one line per step,
  with the Jacobian bounds [σ_min, σ_max] of SPEC C.1 when the records hold them (ProcResNet's
  figure, SPEC C.4).
- `plot_stream`: SPEC B.3 statistics against step, one line per block site (ortho-residual's
  stream-norm and parallel-energy figures).
- `plot_singularity`: SPEC A.2 unit statistics against step or epoch, one line per block and their
  mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from landscape.errors import LandscapeError


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
            out.setdefault(r["block"], []).append((float(r[x]), float(r["value"])))
    return {b: tuple(np.array(v) for v in zip(*sorted(pts))) for b, pts in out.items()}


def _colors(n: int, cmap: str = "viridis") -> list:
    return [colormaps[cmap](i / max(n - 1, 1)) for i in range(n)]


def plot_grad_ratio(records: Iterable[dict], steps: Sequence | None = None, title: str | None = None) -> Figure:
    """Gradient-norm ratio per block (log y, 1 = norm preserved), one line per step (color = step)."""
    records = list(records)
    rows = _select(records, "grad_ratio")
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    all_steps = list(dict.fromkeys(r["step"] for r in rows))
    steps = all_steps if steps is None else list(steps)
    fig = Figure(figsize=(max(5.0, 0.18 * len(blocks) + 3), 3.6), layout="constrained")
    ax = fig.add_subplot()
    pos = {b: i for i, b in enumerate(blocks)}
    for color, step in zip(_colors(len(steps)), steps):
        pts = sorted((pos[r["block"]], r["value"]) for r in rows if r["step"] == step)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, color=color, label=f"step {step}")
        for metric, style in (("jac_sigma_max", "--"), ("jac_sigma_min", ":")):
            bound = sorted((pos[r["block"]], r["value"]) for r in records
                           if r["metric"] == metric and r["step"] == step and r["block"] in pos)
            if bound:
                ax.plot(*zip(*bound), ls=style, color=color, lw=1, label=f"{metric[4:]} (step {step})")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels(blocks, rotation=90, fontsize=7)
    ax.set_xlabel("block")
    ax.set_ylabel(r"$\|\partial L/\partial x_l\| \,/\, \|\partial L/\partial x_{l+1}\|$")
    if len(steps) <= 8:
        ax.legend(fontsize=7)
    ax.set_title(title or "gradient-norm ratio per block")
    return fig


def plot_stream(records: Iterable[dict], metrics: Sequence[str] = ("x_norm2", "f_par_norm2", "f_ortho_norm2",
                                                                   "cos_x_out"),
                blocks: Sequence[str] | None = None, logy: bool = False) -> Figure:
    """Stream statistics against step, one panel per metric, one line per site (color = depth)."""
    records = list(records)
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = _series(_select(records, metric), "step")
        names = [b for b in series if blocks is None or b in blocks]
        for color, name in zip(_colors(len(names), "plasma"), names):
            ax.plot(*series[name], color=color, lw=1.2, label=name)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(metric)
    if len(axes[0].lines) <= 12:
        axes[0].legend(fontsize=7)
    return fig


def plot_singularity(records: Iterable[dict], metrics: Sequence[str] = ("dead_frac", "overlap_act", "eff_rank",
                                                                        "small_sv_frac"),
                     x: str = "epoch") -> Figure:
    """Singularity statistics against `x` ("epoch" when the records carry it, else "step"), per block
    (thin, color = depth) and averaged over blocks (black)."""
    records = list(records)
    if x == "epoch" and not any("epoch" in r for r in records):
        x = "step"
    fig = Figure(figsize=(4.0 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = _series(_select(records, metric), x)
        for color, (xs, ys) in zip(_colors(len(series)), series.values()):
            ax.plot(xs, ys, color=color, lw=0.8, alpha=0.7)
        grid = sorted({v for xs, _ in series.values() for v in xs.tolist()})
        mean = [np.nanmean([ys[xs == g][0] for xs, ys in series.values() if (xs == g).any()]) for g in grid]
        ax.plot(grid, mean, color="k", lw=2, label="mean over blocks")
        ax.set_xlabel(x)
        ax.set_title(metric)
    axes[0].legend(fontsize=7)
    return fig
