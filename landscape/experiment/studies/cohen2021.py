"""Cohen et al. 2021 / 2022 (docs/methods.md §G.7): the edge-of-stability sweep's RESULTS.md table and figures,
from records/eos.

Table `eos_cells`: every cell's statistics and verdicts. Figures: loss and sharpness side by side for GD with
the square loss, GD with cross-entropy and Adam (preconditioned sharpness against (2 + 2β₁)/((1 − β₁)η)), and
the edge ratio of every cell against the step size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from landscape.experiment import eos as E
from landscape.experiment.summary import fmt

RECORDS = "eos"
GRIDS: list = []
LOSS_NAMES = {"mse": "square loss", "ce": "cross-entropy"}


def runs_of(store) -> dict:
    """(optimizer, net, loss, η) → records of the committed sweep.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        {(optimizer, net, loss, η): [record, ...]}.
    """
    return E.load_eos(store.records / RECORDS)


def _ci(d: Mapping | None) -> str:
    if not d or not d.get("n"):
        return "—"
    est = d.get("estimate", d.get("mean"))
    inner = f" [{fmt(d['low'])}, {fmt(d['high'])}]" if math.isfinite(d["low"]) else ""
    return f"{fmt(est)}{inner}"


def _fraction(row: Mapping) -> float:
    lam0 = E.INITIAL_SHARPNESS.get((row["optimizer"], row["net"], row["loss"]))
    if lam0 is None:
        return math.nan
    b1 = E.ADAM["betas"][0]
    limit = 2 / row["lr"] if row["optimizer"] == "gd" else (2 + 2 * b1) / ((1 - b1) * row["lr"])
    return lam0 / limit


def cells_table(store) -> str:
    """Markdown: per cell, n, runs reaching the edge (Wilson 95%), the edge ratio and sharpening (geometric mean
    [95% log-t CI]), the first step at 0.9, post-edge time in the band, final loss and accuracy (mean [t CI]),
    diverged runs, the Holm-adjusted p-values and the verdicts.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    rows = E.judge_eos(runs_of(store))
    lines = ["| optimizer | net | loss | η | η·λ₀/2 | n | reached 0.9 | **edge ratio** | first step ≥ 0.9 | "
             "time in band | sharpening λ/λ₀ | final loss | final acc. | diverged | Holm p (edge; sharpening) | "
             "**edge verdict** | sharpening verdict | post hoc: edge ratio after re-entry | post hoc: rise from the "
             "lowest λ |", "|" + "---|" * 19]
    for r in rows:
        reached = r["reached"]
        lines.append(
            f"| {r['optimizer']} | {E.LABELS.get(r['net'], r['net'])} | {LOSS_NAMES[r['loss']]} | {r['lr']:g} | "
            f"{fmt(_fraction(r))} | {r['n']} | {round(reached['estimate'] * r['n'])}/{r['n']} "
            f"[{fmt(reached['low'], 2)}, {fmt(reached['high'], 2)}] | {_ci(r['edge_ratio'])} | "
            f"{_ci(r['first_step'])} | {_ci(r['within_band'])} | {_ci(r['sharpening'])} | {_ci(r['final_loss'])} | "
            f"{_ci(r['final_acc'])} | {r['diverged']} | {fmt(r.get('p_edge_holm', math.nan), 2)}; "
            f"{fmt(r.get('p_sharpening_holm', math.nan), 2)} | **{r['edge_verdict']}** | "
            f"{r['sharpening_verdict'] or '—'} | {_ci(r['reentry_edge_ratio'])} | {_ci(r['sharpening_from_min'])} |")
    return "\n".join(lines)


def _rows(runs: Mapping, optimizer: str, loss: str) -> dict:
    """plot_eos rows: per net, η → (steps, loss [seeds, T], sharpness [seeds, T], limit)."""
    key = "lambda_p" if optimizer == "adam" else "lambda_max"
    b1 = E.ADAM["betas"][0]
    out: dict = {}
    for (opt, net, lss, lr), recs in sorted(runs.items()):
        if opt != optimizer or lss != loss:
            continue
        steps = sorted({r["step"] for rec in recs for r in rec["rows"]})
        pos = {s: i for i, s in enumerate(steps)}
        L, S = np.full((len(recs), len(steps)), np.nan), np.full((len(recs), len(steps)), np.nan)
        for i, rec in enumerate(recs):
            for r in rec["rows"]:
                L[i, pos[r["step"]]] = r["loss"]
                S[i, pos[r["step"]]] = r.get(key, np.nan)
        limit = 2 / lr if optimizer == "gd" else (2 + 2 * b1) / ((1 - b1) * lr)
        out.setdefault(f"{E.LABELS[net]}, {LOSS_NAMES[loss]}", {})[lr] = (steps, L, S, limit)
    return out


def sweep(optimizer: str, loss: str):
    """A figure function: loss and sharpness side by side for every net of the sweep.

    Args:
        optimizer: "gd" or "adam"; loss: "mse" or "ce".

    Returns:
        draw(store, path) -> Figure.
    """
    def draw(store, path):
        from landscape.plots import plot_eos

        if optimizer == "adam":
            return plot_eos(_rows(runs_of(store), optimizer, loss), path,
                            sharpness_label=r"preconditioned sharpness $\lambda_{max}(P^{-1}H)$",
                            limit_label="(2+2β₁)/((1−β₁)η)", title="Full-batch Adam (β₁ = 0.9), square loss")
        return plot_eos(_rows(runs_of(store), optimizer, loss), path,
                        title=f"Full-batch gradient descent, {LOSS_NAMES[loss]}")
    return draw


def summary(store, path):
    """Every cell's edge ratio against η·λ₀/2, colour by net, line style by loss and optimizer.

    Args:
        store: the records; path: where the figure is saved (PATH.png, PATH.pdf).

    Returns:
        The figure.
    """
    from landscape.plots import plot_edge_summary

    series, styles = {}, {}
    variants = [("gd", "mse"), ("gd", "ce"), ("adam", "mse")]
    for r in E.judge_eos(runs_of(store)):
        label = f"{E.LABELS[r['net']]}, {r['optimizer']}, {LOSS_NAMES[r['loss']]}"
        e = r["edge_ratio"] or {"estimate": math.nan, "low": math.nan, "high": math.nan, "n": 0}
        s = series.setdefault(label, {"x": [], "estimate": [], "low": [], "high": [], "n": []})
        s["x"].append(_fraction(r))
        for k in ("estimate", "low", "high", "n"):
            s[k].append(e[k])
        styles[label] = (list(E.NETS).index(r["net"]), variants.index((r["optimizer"], r["loss"])))
    return plot_edge_summary(series, styles, path, title="Where the sharpness settles, per step size")


def changed(store) -> list[dict]:
    """The previous RESULTS.md's edge-of-stability verdicts (other nets and step sizes) and what replaced them.

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Rows {claim, old, new, why}.
    """
    if not (store.records / RECORDS).is_dir():
        return []
    rows = E.judge_eos(runs_of(store))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["edge_verdict"]] = counts.get(r["edge_verdict"], 0) + 1
    now = ", ".join(f"{v}: {n} cells" for v, n in sorted(counts.items()))
    return [{"claim": "cohen2021: the sharpness rises to 2/η and hovers there (full-batch GD)",
             "old": "plain FC **above** at one step size and inconclusive at the other; zoo residual **above** (a "
                    "net that does not train) and inconclusive; pre-activation residual **below** at both (two "
                    "step sizes per net near its initial sharpness, cross-entropy only, linear t intervals)",
             "new": f"{len(rows)} cells of a step-size sweep: {now}",
             "why": "nets that train, four step sizes per net and loss below and above 2/λ₀, both losses, Adam, "
                    "the edge ratio after the edge is reached, log-scale intervals, an equivalence test with Holm"}]


TABLES = {"eos_cells": cells_table}
FIGURES = {"eos_gd_mse": sweep("gd", "mse"), "eos_gd_ce": sweep("gd", "ce"), "eos_adam_mse": sweep("adam", "mse"),
           "eos_summary": summary}


def budget_table(store) -> str:
    """The sweep's wall time, load and CPU time (records/eos/budget.json, per part).

    Args:
        store: the records (`landscape.experiment.store.Store`).

    Returns:
        Markdown.
    """
    from landscape.experiment.records import read_budget, within
    from landscape.experiment.studies.verdicts import BUDGET_MINUTES, part_cells

    b = read_budget(store.records / RECORDS) or {}
    runs = runs_of(store)
    lines = ["| grid part | runs | wall time (min) | load average, start → end | CPU time (min) | within "
             f"{BUDGET_MINUTES} min |", "|---|---|---|---|---|---|"]
    for part in b.get("parts", []):
        n = sum(len(v) for k, v in runs.items() if k[0] == part["name"])
        cpu, cells = part_cells(part)
        lines.append(f"| eos: {part['name']} | {n} | {cells} | {within(cpu, BUDGET_MINUTES)} |")
    return "\n".join(lines)


TABLES["eos_budget"] = budget_table
