"""The cells of the orhan2018 grids that several tables and figures read (docs/methods.md §A), and the one way
they read a cell's mean over seeds (`cell_mean`).
"""

from __future__ import annotations

MAIN = ["plain", "residual", "hyper", "dense_orth"]
RHO = {"residual": 0.0, "degenerate_0.25": 0.25, "degenerate_0.5": 0.5, "degenerate_0.75": 0.75, "plain": 1.0}
STREAM_RHO = {f"degenerate_{r:g}": r for r in (0, 0.25, 0.5, 0.75, 1)}
# the cross-cell correlations (docs/methods.md §A.4): each singularity statistic against final train accuracy over
# the grid's CELL MEANS, with the sign the paper predicts (more singular, lower accuracy)
CORRELATIONS = (("dead_frac_mean", "less"), ("overlap_act_mean", "less"), ("overlap_act_centered_mean", "less"),
                ("eff_rank_mean", "greater"), ("slq_degenerate_ratio", "less"))


def cell_mean(summary, cell: str, key: str):
    """The mean over seeds of a result key of one cell, from a grid's summary.

    Args:
        summary: the grid's summary ({"cells": [{"cell", "final": {key: {"mean", ...}}}]}).
        cell: the cell name.
        key: the result key.

    Returns:
        The mean, or None when the grid lacks the cell or the cell the key.
    """
    row = next((r for r in summary["cells"] if r["cell"] == cell), None)
    return None if row is None else (row["final"].get(key) or {}).get("mean")
