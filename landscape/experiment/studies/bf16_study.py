"""What bf16 does to a Hessian spectrum (docs/methods.md §E.9): RESULTS.md's table, from records/bf16_study.

The records are written by experiments/bf16_study.py (`run`), one per model and seed: the relative errors of
λmax, the trace and the SLQ density in each precision against float64, of single products, and of central finite
differences along the top eigenvector. Not a grid of the experiment runner, so GRIDS is empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from landscape import stats

GRIDS: list = []
RECORDS = "bf16_study"
PRECISIONS = ("float32", "bf16", "autocast")
"""The compared precisions (each against the float64 measurement of the same model and seed)."""


def log_interval(values: list[float]) -> str:
    """Geometric mean [95% t-interval of log10] and the median of positive errors over seeds.

    Args:
        values: one relative error per seed.

    Returns:
        "g [lo, hi], median m" with two significant digits.
    """
    logs = np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-300))
    ci = stats.t_ci(logs)
    return f"{10 ** logs.mean():.1e} [{10 ** ci.low:.1e}, {10 ** ci.high:.1e}], median {np.median(values):.1e}"


def load_records(root: Path) -> dict[str, list[dict]]:
    """{model: [record per seed]} of records/bf16_study/MODEL/seedS.json.

    Args:
        root: the records directory (records/bf16_study).

    Returns:
        The records grouped by model, seeds in file order.
    """
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(root).glob("*/seed*.json")):
        rec = json.loads(path.read_text())
        out.setdefault(rec["model"], []).append(rec)
    return out


def report(root: Path) -> str:
    """The markdown tables of RESULTS.md's bf16 section: per model, each precision's errors, and the best
    finite-difference error over the step scan with float32 and with bf16 gradients.

    Args:
        root: the records directory (records/bf16_study).

    Returns:
        Markdown.
    """
    lines = []
    for model, recs in load_records(root).items():
        lines += [f"**{model}** ({recs[0]['n_params']:,} parameters, n = {len(recs)} seeds: geometric mean [95% CI], "
                  "median of the relative error against float64)", "",
                  "| precision | λmax | trace | W1(density) / λmax | one product (random v) | one product (top v) |",
                  "|---|---|---|---|---|---|"]
        for v in PRECISIONS:
            cells = [log_interval([r["variants"][v][k] for r in recs])
                     for k in ("lambda_max_error", "trace_error", "w1_over_lambda_max")]
            cells += [log_interval([r["products"][v][k] for r in recs]) for k in ("random", "top")]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        best = {d: log_interval([r["finite_difference"][d]["best"] for r in recs]) for d in ("float32", "bf16")}
        steps = {d: sorted({r["finite_difference"][d]["best_i"] for r in recs}) for d in ("float32", "bf16")}
        lines += ["", f"Finite differences along the top eigenvector, best over δ = δ₀·2^−i: float32 gradients "
                      f"{best['float32']} (i ∈ {steps['float32']}), bf16 gradients {best['bf16']} "
                      f"(i ∈ {steps['bf16']}).", ""]
    return "\n".join(lines).rstrip() + "\n"


def table(store) -> str:
    """RESULTS.md's bf16_study block.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    return report(Path(store.records) / RECORDS)


TABLES = {"bf16_study": table}
FIGURES: dict = {}
