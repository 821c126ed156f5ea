"""Figures from plain results (dicts, arrays), never from models.

Every function draws on a `matplotlib.figure.Figure` (no pyplot state, any backend), optionally saves it as
PNG and PDF, and returns the figure so a notebook can show it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> list[Path]:
    """Write `fig` as PATH.png and PATH.pdf (the suffix of `path`, if any, is replaced)."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".pdf") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")]
    for p in out:
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return out


def plot_training_curves(histories: Mapping[str, Sequence[Mapping]], path: str | os.PathLike | None = None,
                         *, title: str | None = None, log_loss: bool = True) -> Figure:
    """Training loss and training accuracy against epoch, one line per run.

    histories: run name -> per-epoch records with "epoch", "train_loss", "train_acc" (metrics.jsonl lines).
    path: if given, save as PATH.png and PATH.pdf.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, records in histories.items():
        epochs = [r["epoch"] for r in records]
        line, = ax_loss.plot(epochs, [r["train_loss"] for r in records], label=name, lw=1.8)
        ax_acc.plot(epochs, [r["train_acc"] for r in records], label=name, lw=1.8, color=line.get_color())
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    if log_loss:
        ax_loss.set_yscale("log")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy", title="training accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3, which="both")
    ax_acc.legend(loc="lower right", frameon=False)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
