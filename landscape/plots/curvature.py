"""Curvature during training (docs/methods.md §G): the sharpness against the optimizer's stability limit
2/η, with the gradient's share of the top eigenspace and the negative mass, every seed drawn.

Input: `panels` maps a panel title to (2/η, per-seed record lists), the records being the curvature
monitor's plain rows {"step", "metric", "value"} (lambda_max, grad_top_fraction, negative_ratio).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from landscape.plots.style import LINE_STYLES, OKABE_ITO, PathLike, finish, grid, styled, with_n

ROWS = (("lambda_max", r"$\lambda_{max}$ (log)"), ("grad_top_fraction", r"$\|P_{10}\,g\|^2 / \|g\|^2$"),
        ("negative_ratio", "negative mass"))


def _series(recs: Sequence[Mapping], metric: str) -> tuple[list, list]:
    pts = [(r["step"], r["value"]) for r in recs if r["metric"] == metric and r["value"] is not None]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


@styled
def plot_eos(panels: Mapping[str, tuple[float, Sequence[Sequence[Mapping]]]], path: PathLike | None = None, *,
             eps: float = 1e-3, title: str | None = None):
    """One column per panel, rows: λmax (log axis) with the dashed 2/η line, the gradient's top-k share,
    and the negative mass μ(λ < −eps·λmax). Seeds share the column's colour, one line style each."""
    cols = len(panels)
    fig, axes = grid(3 * cols, cols, 2.6, 2.1, sharex="col")
    for j, (name, (limit, seeds)) in enumerate(panels.items()):
        color = OKABE_ITO[j % len(OKABE_ITO)]
        for i, (metric, label) in enumerate(ROWS):
            ax = axes[i * cols + j]
            for s, recs in enumerate(seeds):
                x, y = _series(recs, metric)
                if x:
                    ax.plot(x, y, color=color, ls=LINE_STYLES[s % len(LINE_STYLES)], lw=1,
                            marker="o" if metric == "negative_ratio" else None, ms=2,
                            label=with_n("seeds", len(seeds)) if s == 0 else None)
            if metric == "lambda_max":
                ax.set_yscale("log")
                ax.axhline(limit, color="k", ls="--", lw=1, label=f"2/η = {limit:.3g}")
                ax.set_title(name, fontsize=8)
                ax.legend(fontsize=6, loc="lower right")
            if j == 0:
                ax.set_ylabel(label if metric != "negative_ratio" else f"negative mass (λ < −{eps:g}·λmax)")
            if i == len(ROWS) - 1:
                ax.set_xlabel("step (full-batch GD)")
    return finish(fig, path, title)
