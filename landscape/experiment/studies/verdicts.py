"""Across studies: the verdicts that changed, every paper's verdict counts, and the compute budget."""

from __future__ import annotations

import re
from collections import Counter

import tomllib

from landscape.experiment import registry
from landscape.experiment.records import read_budget
from landscape.experiment.summary import fmt

GRIDS: list = []
BUDGET_MINUTES = 20  # issue 20: each quick grid in at most 20 minutes on the 2-core machine

# claims of the previous RESULTS.md that no longer exist, and why (not derivable from the records: they are gone)
REMOVED = [{"claim": "orhan2018: No skip (rho = 1) trains worse than the identity skip (rho = 0) (`rho_one`)",
            "old": "**disagrees** (orhan2018_mechanism)",
            "new": "removed: its cells were the plain and residual runs of orhan2018 under other names, so it is "
                   "`plain_trains_slower_than_residual`",
            "why": "each run feeds one verdict"}]


def extra_changes(store) -> list[dict]:
    """Rows for statements that are not declared claims, from each study's `CHANGED` function.

    Args:
        store: the records and experiments.

    Returns:
        The rows {"claim", "old", "new", "why"}.
    """
    out = list(REMOVED)
    for name in registry.STUDIES:
        fn = getattr(registry.study(name), "changed", None)
        if fn is not None:
            out += fn(store)
    return out


def verdicts_changed(store) -> str:
    """RESULTS.md's table of verdicts that changed, with the statements that are not declared claims.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    from landscape.experiment.tables import changed_table

    return changed_table(store.verdicts, extra_changes(store))


def verdicts_summary(store) -> str:
    """Per paper: claims, how many were declared before their data, and the adjusted verdicts.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    kinds = ("agrees", "disagrees", "inconclusive", "underpowered")
    lines = ["| paper | claims | confirmatory | exploratory | " + " | ".join(kinds) + " |", "|---" * (4 + len(kinds))
             + "|"]
    papers: dict[str, list] = {}
    for r in store.verdicts:
        papers.setdefault(r["paper"], []).append(r)
    for paper, rows in papers.items():
        c = Counter(r["verdict"] for r in rows)
        s = Counter(r["status"] for r in rows)
        lines.append(f"| {paper} | {len(rows)} | {s['confirmatory']} | {s['exploratory']} | "
                     + " | ".join(str(c[k]) for k in kinds) + " |")
    return "\n".join(lines)


def gpu_hours(store, name: str) -> str:
    """The full profile's estimate, as its TOML states it ("NOT RUN (estimated N GPU-hours ...").

    Args:
        store: the records and experiments.
        name: the experiment's name.

    Returns:
        "N (NOT RUN)" or "—".
    """
    raw = tomllib.loads((store.experiments / f"{name}.toml").read_text())
    desc = raw.get("profiles", {}).get("full", {}).get("description", "")
    m = re.search(r"estimated (\d+(?:\.\d+)?) GPU-hours", desc)
    return f"{m.group(1)} (NOT RUN)" if m else "—"


def part_cells(part: dict) -> tuple[float | None, str]:
    """One grid part's budget cells (the Li and edge-of-stability scripts' budget.json "parts").

    Args:
        part: {"seconds", "load_start", "load_end", "cpu_seconds", ...}, None where not recorded.

    Returns:
        (its CPU minutes or None, "wall | load start → end | CPU" as markdown cells).
    """
    from landscape.experiment.records import minutes

    wall, cpu = minutes(part.get("seconds")), minutes(part.get("cpu_seconds"))
    return cpu, (f"{fmt(wall, 3)} | {fmt(part.get('load_start'), 2)} → {fmt(part.get('load_end'), 2)} | "
                 f"{fmt(cpu, 3)}")


def budget(store) -> str:
    """Each registered grid: runs, wall time under the recorded load, CPU time (its wall time on an idle core),
    whether it fits the budget, and the full profile's GPU-hours.

    Args:
        store: the records and experiments.

    Returns:
        The markdown table.
    """
    lines = ["| grid | profile | runs | wall time (min) | load average, start → end | CPU time (min) | within "
             f"{BUDGET_MINUTES} min | full profile GPU-hours |", "|---|---|---|---|---|---|---|---|"]
    for spec in registry.grids():
        if not store.has(spec.name, spec.profile):
            lines.append(f"| {spec.name} | {spec.profile} | NOT RUN | — | — | — | — | — |")
            continue
        b = read_budget(store.records / spec.dir) or {}
        runs = len(store.grid(spec.name, spec.profile).runs)
        wall = b["seconds"] / 60 if b.get("seconds") else None
        cpu = b["cpu_seconds"] / 60 if b.get("cpu_seconds") else None
        load = f"{fmt(b.get('load_start'), 2)} → {fmt(b.get('load_end'), 2)}" if b else "—"
        used = cpu if cpu is not None else wall
        ok = "—" if used is None else ("yes" if used <= BUDGET_MINUTES else "**no**")
        full = gpu_hours(store, spec.name) if spec.profile == "quick" else ""
        lines.append(f"| {spec.name} | {spec.profile} | {runs} | {fmt(wall, 2)} | {load} | {fmt(cpu, 2)} | {ok} | "
                     f"{full} |")
    return "\n".join(lines)


TABLES = {"verdicts_changed": verdicts_changed, "verdicts_summary": verdicts_summary, "budget": budget}
FIGURES: dict = {}
