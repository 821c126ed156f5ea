"""The markdown tables of RESULTS.md, from judged claims (`verdicts`) and grid summaries (`summary`).

    verdict_table(rows)          one row per claim: A − B, data, n, Δ or ratio [95% CI], p, p Holm (m), MDE,
                                 raw → adjusted verdict
    secondary_table(store, rows) every secondary statistic of each claim on the claim's verdict data
    papers_table(rows)           the papers' published values beside the stand-in's, with their source
    cells_table(summary, keys)   mean ± sample SD over seeds per cell (n in its own column)
    changed_table(rows, extra)   the verdicts that changed: old → new value and verdict, and why

Numbers are printed with `summary.fmt` (3 significant digits); a ratio or gain is "×r [lo, hi]" (geometric
means, log-scale interval), a difference "Δ [lo, hi]".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from landscape.experiment.keys import scale_of
from landscape.experiment.summary import fmt
from landscape.experiment.verdicts import ALPHA, POWER, claim_test

MDE_NOTE = (f"MDE: the true difference a two-sided paired t-test at α = {ALPHA:g} detects with power {POWER:g} at "
            "this n and the observed SD of the differences (noncentral t; docs/methods.md §H.3); a ratio's MDE is "
            "a factor. (paper ...): the paper's published effect on the same scale; an MDE above it is "
            "\"underpowered\".")


def estimate_text(test: Mapping, digits: int = 3) -> str:
    """"−0.032 [−0.055, −0.009]" (a difference) or "×1.52 [1.2, 1.9]" (a ratio A/B).

    Args:
        test: a `claim_test` result.
        digits: significant digits.

    Returns:
        The text ("—" without an estimate).
    """
    if test["estimate"] is None:
        return "—"
    pre = "×" if test["scale"] == "log" else ""
    ci = f" [{fmt(test['low'], digits)}, {fmt(test['high'], digits)}]" if test["low"] is not None else ""
    return f"{pre}{fmt(test['estimate'], digits)}{ci}"


def mde_text(row: Mapping) -> str:
    """The MDE on the reported scale, with the paper's effect beside it when it has one.

    Args:
        row: a judged claim row.

    Returns:
        The text.
    """
    t = row["test"]
    if t["mde"] is None:
        return "—"
    pre = "×" if t["scale"] == "log" else ""
    eff = row.get("effect")
    if eff is None:
        return f"{pre}{fmt(t['mde'], 2)}"
    shown = math.exp(eff) if t["scale"] == "log" else abs(eff)
    return f"{pre}{fmt(t['mde'], 2)} (paper {pre}{fmt(shown, 2)})"


def seeds_text(seeds: Sequence[int]) -> str:
    """"0-4" for a run of consecutive seeds, else "0, 2, 3".

    Args:
        seeds: the seeds.

    Returns:
        The text ("—" without seeds).
    """
    if not seeds:
        return "—"
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 2 else ", ".join(map(str, s))


def _predicted(row: Mapping) -> str:
    null = "1" if row["test"]["scale"] == "log" else "0"
    return f"{'>' if row['direction'] == 'greater' else '<'} {null}"


def verdict_table(rows: Sequence[Mapping]) -> str:
    """One row per judged claim (see the module docstring).

    Args:
        rows: the judged claim rows.

    Returns:
        The markdown table.
    """
    lines = ["| claim | A − B (metric, predicted) | data | n | Δ or ratio A/B [95% CI] | p | p Holm (m) | MDE | "
             "verdict: raw → Holm |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["test"]
        a, b = r["cells"]
        data = f"{r['status']}: {r['profile']} seeds {seeds_text(t['seeds'])}"
        lines.append(f"| {r['text']} (`{r['name']}`) | `{a}` − `{b}` ({r['metric']}, {_predicted(r)}) | {data} | "
                     f"{t['n']} | {estimate_text(t)} | {fmt(t['p'], 2)} | {fmt(r['p_holm'], 2)} ({r['m']}) | "
                     f"{mde_text(r)} | {t['verdict']} → **{r['verdict']}** |")
    return "\n".join(lines)


def provenance_table(rows: Sequence[Mapping]) -> str:
    """When each claim was declared and what data it precedes (docs/methods.md §H.5).

    Args:
        rows: the judged claim rows.

    Returns:
        The markdown table.
    """
    lines = ["| claim | declared in commit | first run of its data | formed | verdict data |", "|---|---|---|---|---|"]
    for r in rows:
        when = "before the data was seen" if r["order"] == "before" else "after the data was seen"
        extra = (f"; exploratory seeds {seeds_text(r['exploratory']['seeds'])}: "
                 f"{estimate_text(r['exploratory'])} ({r['exploratory']['verdict']})") if r["exploratory"] else ""
        lines.append(f"| `{r['name']}` | `{r['declared'] or '—'}` | {r['first_run'] or '—'} | {when} | "
                     f"{r['status']} ({r['profile']} seeds {seeds_text(r['test']['seeds'])}){extra} |")
    return "\n".join(lines)


def secondary_table(store, rows: Sequence[Mapping]) -> str:
    """Each claim's secondary statistics, A − B on the claim's verdict data (ratios as A/B), no verdict.

    Args:
        store: the records and experiments.
        rows: the judged claim rows.

    Returns:
        The markdown table.
    """
    lines = ["| claim | statistic | mean A / mean B | Δ or ratio A/B [95% CI] | n | p |", "|---|---|---|---|---|---|"]
    for r in rows:
        summary = store.summary(r["grid"], r["profile"])
        for key in r["secondary"]:
            t = claim_test(summary, r, key, scale_of(key))
            if not t["n"]:
                continue
            lines.append(f"| `{r['name']}` | {key} | {fmt(t['mean_a'])} / {fmt(t['mean_b'])} | {estimate_text(t)} | "
                         f"{t['n']} | {fmt(t['p'], 2)} |")
    return "\n".join(lines)


def papers_table(rows: Sequence[Mapping]) -> str:
    """The paper's published values beside the stand-in's for each claim that declares them.

    Args:
        rows: the judged claim rows.

    Returns:
        The markdown table.
    """
    lines = ["| claim | paper: A vs B (effect) | source; setup | stand-in: A vs B, effect [95% CI] (n) | MDE |",
             "|---|---|---|---|---|"]
    if not any(r.get("published") for r in rows):
        return "(no published value of these metrics)"
    for r in rows:
        pub = r.get("published")
        if not pub:
            continue
        t = r["test"]
        err = f" ± {pub['error']:g}" if "error" in pub else ""
        paper = f"{pub['a']:g}{err} vs {pub['b']:g}{err} ({pub['a'] - pub['b']:+.2g})"  # as the source gives them
        lines.append(f"| `{r['name']}` | {paper} | "
                     f"{pub['source']}; {pub['setup']} | {fmt(t['mean_a'])} vs {fmt(t['mean_b'])}, "
                     f"{estimate_text(t)} ({t['n']}) | {mde_text(r)} |")
    return "\n".join(lines)


def cells_table(summary: Mapping, keys: Sequence[str], cells: Sequence[str] | None = None) -> str:
    """Mean ± sample SD over seeds per cell of each key ("init.KEY" at initialization); n = finished seeds.

    Args:
        summary: a summary dict.
        keys: the result keys, one column each.
        cells: the cells (None: all).

    Returns:
        The markdown table.
    """
    lines = ["| cell | n | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    rows = [r for r in summary["cells"] if cells is None or r["cell"] in cells]
    for row in rows:
        vals = []
        for k in keys:
            part, key = ("init", k[5:]) if k.startswith("init.") else ("final", k)
            s = row[part].get(key)
            if not s or s["mean"] is None:
                vals.append("—")
            else:
                vals.append(fmt(s["mean"]) + (f" ± {fmt(s['std'], 2)}" if s["std"] is not None else ""))
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _reasons(row: Mapping) -> str:
    prev, t = row["previous"], row["test"]
    out = []
    if prev.get("metric") and prev["metric"] != row["metric"]:
        out.append(f"primary metric {prev['metric']} → {row['metric']} (the one planned before the run)")
    if row["profile"] == "confirm":
        out.append(f"formed after seeds 0-4 were seen: re-tested on fresh seeds {seeds_text(t['seeds'])}")
    elif row["status"] == "exploratory":
        out.append("formed after its data was seen: exploratory")
    if row["verdict"] == "underpowered":
        out.append(f"MDE {mde_text(row)} exceeds the paper's effect")
    elif t["verdict"] != row["verdict"]:
        out.append(f"Holm over the paper's {row['m']} claims: p = {fmt(t['p'], 2)} → {fmt(row['p_holm'], 2)}")
    if t["scale"] == "log" and prev["test"]["scale"] != "log":
        out.append("a ratio, tested on the log scale")
    return "; ".join(out) or "—"


def changed_table(rows: Sequence[Mapping], extra: Sequence[Mapping] = ()) -> str:
    """Claims whose verdict differs from `previous` (the old rule on the old data), and `extra` rows
    {"claim", "old", "new", "why"} for statements that are not declared claims.

    Args:
        rows: the judged claim rows.
        extra: further rows.

    Returns:
        The markdown table.
    """
    lines = ["| paper: claim | old: value, verdict | new: value, verdict | why |", "|---|---|---|---|"]
    for r in rows:
        prev = r.get("previous")
        if not prev or prev["test"]["verdict"] == r["verdict"]:
            continue
        old = (f"{prev.get('metric') or r['metric']} {estimate_text(prev['test'])} "
               f"(seeds {seeds_text(prev['test']['seeds'])}), **{prev['test']['verdict']}**")
        new = (f"{r['metric']} {estimate_text(r['test'])} (seeds {seeds_text(r['test']['seeds'])}, p Holm "
               f"{fmt(r['p_holm'], 2)}), **{r['verdict']}**")
        lines.append(f"| {r['paper']}: {r['text']} (`{r['name']}`) | {old} | {new} | {_reasons(r)} |")
    for e in extra:
        lines.append(f"| {e['claim']} | {e['old']} | {e['new']} | {e['why']} |")
    return "\n".join(lines)


def paper_tables(paper: str) -> dict:
    """The four tables every paper's section has: {PAPER_verdicts, PAPER_provenance, PAPER_secondary,
    PAPER_papers}, each a function of the store over the paper's judged claims.

    Args:
        paper: the paper's key ("orhan2018", ...).

    Returns:
        {table name: function(store) → markdown}.
    """
    def rows(store) -> list[dict]:
        return [r for r in store.verdicts if r["paper"] == paper]

    return {f"{paper}_verdicts": lambda store: verdict_table(rows(store)) + "\n\n" + MDE_NOTE,
            f"{paper}_provenance": lambda store: provenance_table(rows(store)),
            f"{paper}_secondary": lambda store: secondary_table(store, rows(store)),
            f"{paper}_papers": lambda store: papers_table(rows(store))}


def cells_of(grid: str, keys: Sequence[str], profile: str = "quick", cells: Sequence[str] | None = None):
    """A table function: `cells_table` of one grid's records.

    Args:
        grid: the grid's name.
        keys: the result keys.
        profile: the grid's profile.
        cells: the cells (None: all).

    Returns:
        function(store) → markdown.
    """
    return lambda store: cells_table(store.summary(grid, profile), keys, cells)
