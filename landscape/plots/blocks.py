"""Block heterogeneity (docs/methods.md §E.7): the pairwise JS distances of block spectra and the densities.

Input: `panels` maps a model name to {"names": block names, "kinds": their kinds, "matrix": [B, B] JS distances
of one seed, "values": the model's heterogeneity per seed, "interval": its (low, high) 95% interval, "densities":
{block: (grid, density)} of that seed} (`landscape.experiment.blocks.figure_panels`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from landscape.plots.style import OKABE_ITO, PathLike, finish, grid, styled, with_n

KIND_COLORS = {"embedding": OKABE_ITO[0], "attention": OKABE_ITO[1], "mlp": OKABE_ITO[2], "norm": OKABE_ITO[3],
               "conv": OKABE_ITO[4], "linear": OKABE_ITO[5], "other": OKABE_ITO[6 % len(OKABE_ITO)]}


@styled
def plot_block_heterogeneity(panels: Mapping[str, Mapping], path: PathLike | None = None, *,
                             title: str | None = None):
    """One heatmap of pairwise JS distances per model (blocks in forward order, one seed; a shared colour scale
    from 0 to √ln 2), and a last panel with every seed's mean pairwise distance per model, its mean and 95%
    interval.

    Args:
        panels: model → {"names", "matrix", "values", "interval", ...} (`experiment.blocks.figure_panels`).
        path: where to save (PATH.png and .pdf; None: not saved).
        title: the figure's title.

    Returns:
        The figure.
    """
    n = len(panels)
    fig, axes = grid(n + 1, n + 1, 3.3, 3.0)
    top = float(np.sqrt(np.log(2)))
    image = None
    for ax, (model, p) in zip(axes, panels.items()):
        image = ax.imshow(np.asarray(p["matrix"]), vmin=0, vmax=top, cmap="viridis")
        ax.set_title(f"{model}: JS distance, seed 0", fontsize=8)
        ticks = np.arange(len(p["names"]))
        ax.set_xticks(ticks, [""] * len(ticks))
        ax.set_yticks(ticks, [f"{k[:4]} {nm}" for nm, k in zip(p["names"], p["kinds"])], fontsize=4)
        ax.grid(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:n], shrink=0.8, label="JS distance (natural log)")
    ax = axes[n]
    for i, (model, p) in enumerate(panels.items()):
        values = np.asarray(p["values"], dtype=float)
        ax.plot(np.full(values.size, i) + np.linspace(-0.08, 0.08, values.size), values, "o", ms=4,
                color=OKABE_ITO[i % len(OKABE_ITO)], alpha=0.7, label=with_n(model, values.size))
        lo, hi = p["interval"]
        ax.errorbar([i + 0.25], [values.mean()], yerr=[[values.mean() - lo], [hi - values.mean()]], fmt="s",
                    color="k", capsize=3, ms=4)
    ax.set_xticks(range(n), list(panels))
    ax.set_xlim(-0.5, n - 0.3)
    ax.set_ylabel("mean pairwise JS distance")
    ax.set_title("heterogeneity per seed; mean, 95% interval", fontsize=8)
    ax.legend(fontsize=6)
    return finish(fig, path, title)


@styled
def plot_block_densities(panels: Mapping[str, Mapping], path: PathLike | None = None, *, title: str | None = None):
    """Each block's smoothed spectral density (log y-axis), one panel per model, coloured by block kind; the
    eigenvalue axis divided by the largest |λ| of the model's grid so both panels share it.

    Args:
        panels: model → {"densities": {block: (grid, density)}, "kinds": [kind per block]}.
        path: where to save (None: not saved).
        title: the figure's title.

    Returns:
        The figure.
    """
    fig, axes = grid(len(panels), len(panels), 4.0, 2.8)
    for ax, (model, p) in zip(axes, panels.items()):
        scale = max(float(np.abs(np.asarray(g)).max()) for g, _ in p["densities"].values())
        seen = set()
        for (g, d), kind in zip(p["densities"].values(), p["kinds"]):
            ax.plot(np.asarray(g) / scale, np.maximum(d * scale, 1e-8), lw=0.8, color=KIND_COLORS.get(kind, "k"),
                    label=kind if kind not in seen else None, alpha=0.8)
            seen.add(kind)
        ax.set_yscale("log")
        ax.set_ylim(1e-6, None)
        ax.set_xlabel(r"$\lambda / \max_B |\lambda|$")
        ax.set_ylabel("density")
        ax.set_title(f"{model}: block spectra, seed 0", fontsize=8)
        ax.legend(fontsize=6)
    return finish(fig, path, title)
