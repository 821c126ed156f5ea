"""Loss-surface figures from plain arrays (what `surface.npz` holds), never from models.

    plot_surface_1d       loss (and accuracy, right axis) along one direction or a path; several curves
    plot_surface_contour  filled contours of a 2-D surface, optional trajectory overlaid (Li et al. 2018 Fig. 9)
    plot_surface_3d       the same surface as a 3-D mesh

2-D arrays follow numpy.meshgrid(x, y): loss[i, j] is the loss at (x[j], y[i]). Each function draws on a
fresh Figure, saves PATH.png + PATH.pdf when `path` is given (`landscape.plots.save_figure`), and returns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from landscape.errors import LandscapeError
from landscape.plots.style import PathLike, finish, styled


def _grid2(x: Any, y: Any, loss: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = np.asarray(x, float), np.asarray(y, float), np.asarray(loss, float)
    if z.shape != (len(y), len(x)):
        raise LandscapeError(f"a 2-D surface needs loss of shape [len(y), len(x)] = [{len(y)}, {len(x)}], "
                             f"got {list(z.shape)}")
    return x, y, z


@styled
def plot_surface_1d(curves: Mapping[str, Mapping[str, Any]], path: PathLike | None = None, *,
                    xlabel: str = "coordinate", log: bool = False, title: str | None = None) -> Figure:
    """curves: label → {"x": [n], "loss": [n], optional "accuracy": [n]} (solid loss, dashed accuracy).

    Loss (and accuracy) along one coordinate, one line per label.

    Args:
        curves: label → {"x": [n], "loss": [n], optional "accuracy": [n]} (solid loss, dashed accuracy).
        path: where to save (None: not saved).
        xlabel: the x axis label.
        log: a log loss axis.
        title: the figure's title.

    Returns:
        The figure.
    """
    if not curves:
        raise LandscapeError("plot_surface_1d: no curves")
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    acc_ax = None
    for i, (label, c) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(np.asarray(c["x"], float), np.asarray(c["loss"], float), color=color, label=label)
        acc = c.get("accuracy")
        if acc is not None and np.isfinite(np.asarray(acc, float)).any():
            acc_ax = acc_ax or ax.twinx()
            acc_ax.plot(np.asarray(c["x"], float), 100 * np.asarray(acc, float), color=color, ls="--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    if acc_ax is not None:
        acc_ax.set_ylabel("accuracy (%), dashed")
        acc_ax.set_ylim(0, 100)
        acc_ax.grid(False)
    ax.legend(loc="upper center")
    return finish(fig, path, title)


@styled
def plot_surface_contour(x: Any, y: Any, loss: Any, path: PathLike | None = None, *,
                         trajectory: Sequence[Sequence[float]] | None = None, levels: int = 30, log: bool = True,
                         labels: tuple[str, str] = ("direction 1", "direction 2"), title: str | None = None) -> Figure:
    """Filled contours of loss[i, j] at (x[j], y[i]); `trajectory` [T, 2] drawn as a line with dots, its
    last point (the final weights) starred. log: logarithmic contour levels (loss must be > 0).

    Args:
        x: [nx] coordinates of the columns.
        y: [ny] coordinates of the rows.
        loss: [ny, nx] losses.
        path: where to save (None: not saved).
        trajectory: [T, 2] points to draw (None: none).
        levels: contour levels.
        log: logarithmic levels.
        labels: the axis labels.
        title: the figure's title.

    Returns:
        The figure.
    """
    x, y, z = _grid2(x, y, loss)
    fig = Figure(figsize=(4.8, 4.0), layout="constrained")
    ax = fig.subplots()
    finite = z[np.isfinite(z)]
    if log and finite.size and finite.min() > 0 and finite.max() > finite.min():
        lv = np.geomspace(finite.min(), finite.max(), levels)
        cs = ax.contourf(x, y, z, levels=lv, norm=LogNorm(), cmap="viridis")
    else:
        cs = ax.contourf(x, y, z, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss", format="%.3g")
    if trajectory is not None and len(trajectory):
        tr = np.asarray(trajectory, float)
        ax.plot(tr[:, 0], tr[:, 1], "-o", color="white", ms=2.5, lw=1, mec="black", mew=0.4)
        ax.plot(tr[-1, 0], tr[-1, 1], "*", color="red", ms=10)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_aspect("auto")
    return finish(fig, path, title)


@styled
def plot_surface_3d(x: Any, y: Any, loss: Any, path: PathLike | None = None, *, log: bool = False,
                    clip: float | None = None, title: str | None = None) -> Figure:
    """3-D mesh of loss[i, j] at (x[j], y[i]); `clip` caps the loss drawn (Li et al. clip at 10), `log`
    draws log10 of the loss.

    Args:
        x: [nx] coordinates of the columns.
        y: [ny] coordinates of the rows.
        loss: [ny, nx] losses.
        path: where to save (None: not saved).
        log: draw log10(loss).
        clip: the largest loss drawn (None: no cap).
        title: the figure's title.

    Returns:
        The figure.
    """
    x, y, z = _grid2(x, y, loss)
    z = np.minimum(z, clip) if clip is not None else z
    if log:
        z = np.log10(np.maximum(z, np.finfo(float).tiny))
    fig = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    X, Y = np.meshgrid(x, y)
    ax.plot_surface(X, Y, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel("log10 loss" if log else "loss")
    return finish(fig, path, title)
