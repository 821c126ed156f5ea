"""Orhan & Pitkow 2018 (docs/methods.md §A): skips and singularities — the grids, tables and figures (the
figures in `orhan2018_figures`, the cells several of them read in `orhan2018_cells`)."""

from __future__ import annotations

from landscape import stats
from landscape.experiment.records import exact_eigenvalues
from landscape.experiment.registry import GridSpec
from landscape.experiment.studies.orhan2018_cells import CORRELATIONS, RHO, STREAM_RHO, cell_mean
from landscape.experiment.studies.orhan2018_figures import FIGURES
from landscape.experiment.summary import fmt
from landscape.experiment.tables import cells_of, paper_tables

__all__ = ["FIGURES", "GRIDS", "HEAD", "TABLES", "changed", "correlation", "dead_unit_null", "degeneracy"]

GRIDS = [GridSpec("orhan2018"), GridSpec("orhan2018", "confirm"), GridSpec("orhan2018_stream"),
         GridSpec("orhan2018_size")]
HEAD = ["train_acc", "test_acc", "epoch_to_target", "slq_degenerate_ratio", "exact_degenerate_ratio",
        "exact_null_ratio", "dead_frac_mean", "overlap_act_mean", "overlap_act_centered_mean", "eff_rank_mean",
        "small_sv_frac_mean"]


def correlation(store) -> str:
    """Spearman's ρ of each singularity statistic with train accuracy over the orhan2018 grid's cell means, and
    of the degenerate fraction ρ with train accuracy over the five cell means of each ablation.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    lines = ["| points | x | y | Spearman ρ [95% CI] | n | p | verdict (predicted) |", "|---|---|---|---|---|---|---|"]
    s = store.summary("orhan2018")
    cells = [r["cell"] for r in s["cells"]]
    for key, direction in CORRELATIONS:
        sp = stats.spearman([cell_mean(s, c, key) for c in cells], [cell_mean(s, c, "train_acc") for c in cells])
        lines.append(_corr_row("orhan2018 cell means (exploratory: formed after round 1)", key, "train_acc", sp,
                               direction))
    for grid, rho in (("orhan2018", RHO), ("orhan2018_stream", STREAM_RHO)):
        if store.has(grid):
            g = store.summary(grid)
            sp = stats.spearman(list(rho.values()), [cell_mean(g, c, "train_acc") for c in rho])
            lines.append(_corr_row(f"{grid}: the five rho cells' means", "rho", "train_acc", sp, "less"))
    return "\n".join(lines)


def _corr_row(points: str, x: str, y: str, sp: dict, direction: str) -> str:
    ci = f"{sp['rho']:+.2f} [{sp['low']:+.2f}, {sp['high']:+.2f}]" if sp["low"] == sp["low"] else fmt(sp["rho"])
    verdict = stats.verdict((sp["low"], sp["high"]), direction)
    return (f"| {points} | {x} | {y} | {ci} | {sp['n']} | {fmt(sp['p'], 2)} | {verdict} "
            f"({'<' if direction == 'less' else '>'} 0) |")


def degeneracy(store) -> str:
    """Per cell: each degeneracy statistic with the mean of the quadrature's guaranteed bracket (SLQ) and the
    exact spectrum's value where it was computed.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    s = store.summary("orhan2018")

    def val(row, key):
        return fmt((row["final"].get(key) or {}).get("mean"))

    def bracket(row, key):
        lo, hi = ((row["final"].get(f"{key}_{e}") or {}).get("mean") for e in ("low", "high"))
        return val(row, key) if lo is None else f"{val(row, key)} [{fmt(lo)}, {fmt(hi)}]"

    lines = ["| cell | n | SLQ μ(abs(λ) < 10⁻³ λmax) [bracket] | SLQ μ(abs(λ) < 10⁻² median abs(λ)) [bracket] | "
             "exact μ(abs(λ) < 10⁻³ λmax) | exact μ(abs(λ) < 10⁻² median abs(λ)) | exact μ(abs(λ) < 10⁻⁷ λmax) | "
             "predicted by dead units |", "|---|---|---|---|---|---|---|---|"]
    for row in s["cells"]:
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | {bracket(row, 'slq_degenerate_ratio')} | "
                     f"{bracket(row, 'slq_bulk_degenerate_ratio')} | {val(row, 'exact_degenerate_ratio')} | "
                     f"{val(row, 'exact_bulk_degenerate_ratio')} | {val(row, 'exact_null_ratio')} | "
                     f"{dead_unit_null(store, row)} |")
    return "\n".join(lines)


def dead_unit_null(store, row) -> str:
    """The null mass dead units alone produce: a dead unit's incoming weights and bias and its outgoing weights
    (2 · width + 1 parameters) have zero gradient and curvature, so dead fraction × units × (2 · width + 1) /
    parameters (docs/methods.md §A.4).

    Args:
        store: the records and experiments.
        row: the cell's summary row.

    Returns:
        The fraction as text ("—" without exact eigenvalues or dead-unit statistics).
    """
    eig = exact_eigenvalues(store.grid("orhan2018").cell_runs(row["cell"])[0])
    dead = (row["final"].get("dead_frac_mean") or {}).get("mean")
    if eig is None or dead is None:
        return "—"
    cfg = store.grid("orhan2018").cell_runs(row["cell"])[0]["config"]["train"]["model_config"]
    units = cfg["depth"] * cfg["width"]
    return fmt(dead * units * (2 * cfg["width"] + 1) / eig.size)


TABLES = {**paper_tables("orhan2018"),
          "orhan2018_cells": cells_of("orhan2018", HEAD),
          "orhan2018_stream_cells": cells_of("orhan2018_stream", ["train_acc", "test_acc", "epoch_to_target",
                                                                  "x_norm2_last", "slq_degenerate_ratio",
                                                                  "overlap_act_centered_mean", "eff_rank_mean",
                                                                  "small_sv_frac_mean"]),
          "orhan2018_size_cells": cells_of("orhan2018_size", ["train_acc", "test_acc", "epoch_to_target",
                                                              "slq_degenerate_ratio", "slq_lambda_max",
                                                              "dead_frac_mean", "overlap_act_centered_mean",
                                                              "eff_rank_mean", "small_sv_frac_mean"]),
          "orhan2018_degeneracy": degeneracy, "orhan2018_correlation": correlation}


def changed(store) -> list[dict]:
    """The cross-cell correlation, which round 2 reported as "no support" from typed round-1 values.

    Args:
        store: the records and experiments.

    Returns:
        [{"claim", "old", "new", "why"}].
    """
    s = store.summary("orhan2018")
    cells = [r["cell"] for r in s["cells"]]
    sp = stats.spearman([cell_mean(s, c, "overlap_act_mean") for c in cells],
                        [cell_mean(s, c, "train_acc") for c in cells])
    new = stats.verdict((sp["low"], sp["high"]), "less")
    if new == "inconclusive":
        return []
    return [{"claim": "orhan2018: across cells, lower training accuracy goes with more overlap (raw activation "
                      "overlap, Spearman over cell means)",
             "old": "typed round-1 value over 14 cells (3 seeds) in round2_report.py, **inconclusive** "
                    "(\"no support\"); the 5-seed figure printed another interval",
             "new": f"ρ = {sp['rho']:+.2f} [{sp['low']:+.2f}, {sp['high']:+.2f}] over {sp['n']} cell means, "
                    f"**{new}** (exploratory)",
             "why": "computed from the records over the grid's cell means (the unit), not typed; the prediction "
                    "is ρ < 0"}]
