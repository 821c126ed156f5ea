"""Across seeds: the per-cell summary of every result key, the headline table, and the claims' verdicts.

One statistics convention (`landscape.stats`, docs/methods.md §H): a key's spread over seeds is the
sample SD (ddof = 1; null for one seed), with a Student-t 95% interval of the mean. A claim compares two
cells paired by seed on its primary metric, d_s = A_s − B_s: the mean difference, its 95% t interval and
the paired t-test p-value; the verdict follows from the interval alone (`landscape.stats.verdict`):
"agrees" when it lies wholly on the predicted side of 0, "disagrees" when wholly on the other,
otherwise "inconclusive". Secondary metrics get the same paired difference and interval, without a
verdict.

    summary.json   {"experiment", "profile", "description", "profile_description", "notes", "citations",
                    "git", "cells": [{"cell", "base", "label", "note", "setting", "seeds", "status",
                    "final": {KEY: {"mean", "std", "n", "low", "high", "values"}}, "init": {...}}],
                    "claims": [see `evaluate_claim`]}

`papers_table` puts each claim's published values (declared in the TOML) beside this grid's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from landscape import stats
from landscape.experiment.config import Experiment
from landscape.train import git_version


def seed_stats(values: Sequence) -> dict:
    """{"mean", "std" (sample SD, None for n < 2), "n" (finite values), "low", "high" (95% t interval),
    "values" (per seed, as given)}.

    Args:
        values: one value per seed (None or NaN where a run has none).

    Returns:
        The statistics dict.
    """
    interval = stats.t_ci(values)
    none = lambda v: v if math.isfinite(v) else None  # noqa: E731
    return {"mean": none(interval.estimate), "std": none(stats.mean_sd(values)[1]), "n": interval.n,
            "low": none(interval.low), "high": none(interval.high), "values": list(values)}


def summarize(exp: Experiment, out: Path) -> dict:
    """Per cell, mean ± sd over seeds of every result key, from the finished runs in `out`, and the claims.

    Args:
        exp: the resolved experiment.
        out: its output directory.

    Returns:
        The summary dict (`summary_of`).
    """
    results = []
    for run in exp.runs:
        path = out / run.path / "result.json"
        if (out / run.path / "done.json").exists() and path.exists():
            results.append(json.loads(path.read_text()))
    meta = {"name": exp.name, "profile": exp.profile, "description": exp.description,
            "profile_description": exp.profile_description, "notes": exp.notes, "citations": exp.citations,
            "claims": exp.claims, "git": git_version()}
    return summary_of(meta, results, [r.cell for r in exp.runs])


def summary_of(meta: Mapping, results: Sequence[Mapping], cells: Sequence[str]) -> dict:
    """summary.json from run results (result.json dicts) and the experiment's record `meta` ("name",
    "profile", "description", "profile_description", "notes", "citations", "claims", "git"): one row per
    cell in the order of `cells`, a cell without results left out.

    Args:
        meta: the experiment's record.
        results: the runs' result dicts.
        cells: the cell order.

    Returns:
        The summary dict {..., "cells": [row per cell], "claims": [judged claims]}.
    """
    by_cell: dict[str, list[Mapping]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], []).append(r)
    rows = []
    for name in dict.fromkeys(cells):
        runs = by_cell.get(name, [])
        if not runs:
            continue
        row = {"cell": name, "base": runs[0]["base"], "label": runs[0]["label"], "note": runs[0]["note"],
               "setting": runs[0]["setting"], "seeds": [r["seed"] for r in runs],
               "status": {s: sum(r["status"] == s for r in runs) for s in {r["status"] for r in runs}}}
        for part in ("final", "init"):
            keys = list(dict.fromkeys(k for r in runs for k in r[part]))
            row[part] = {k: seed_stats([r[part].get(k) for r in runs]) for k in keys}
        earlier = {k: e for r in runs for k, e in r.get("from_epoch", {}).items()}
        if earlier:  # final keys measured before the last epoch (keys.final_keys), and from which epoch
            row["from_epoch"] = earlier
        rows.append(row)
    summary = {"experiment": meta["name"], "profile": meta["profile"], "description": meta.get("description", ""),
               "profile_description": meta.get("profile_description", ""), "notes": meta.get("notes", []),
               "citations": meta.get("citations", []), "git": meta.get("git"), "cells": rows}
    summary["claims"] = [evaluate_claim(summary, claim) for claim in meta.get("claims", [])]
    return summary


def per_seed(summary: Mapping, cell: str, key: str) -> dict:
    """{seed: value} of a result key ("init.KEY" for the value at initialization) in one cell.

    Args:
        summary: a summary dict.
        cell: the cell name.
        key: the result key.

    Returns:
        {seed: value}; {} when the cell or key is absent.
    """
    part, key = ("init", key[5:]) if key.startswith("init.") else ("final", key)
    row = next((r for r in summary["cells"] if r["cell"] == cell), None)
    if row is None or key not in row[part]:
        return {}
    return dict(zip(row["seeds"], row[part][key]["values"]))


def compare(summary: Mapping, key: str, a: str, b: str) -> dict:
    """Paired difference A − B of `key` over the seeds both cells have: {"key", "a", "b", "mean_a", "mean_b",
    "diff", "sd", "n", "low", "high", "p", "seeds", "values_a", "values_b"} (None where undefined).

    Args:
        summary: a summary dict.
        key: the result key.
        a: the first cell.
        b: the second cell.

    Returns:
        The comparison dict.
    """
    va, vb = per_seed(summary, a, key), per_seed(summary, b, key)
    seeds = [s for s in va if s in vb]
    p = stats.paired({s: va[s] for s in seeds}, {s: vb[s] for s in seeds})
    none = lambda v: v if v is not None and math.isfinite(v) else None  # noqa: E731
    return {"key": key, "a": a, "b": b, "mean_a": none(stats.mean_sd(list(va.values()))[0]),
            "mean_b": none(stats.mean_sd(list(vb.values()))[0]), "diff": none(p.mean), "sd": none(p.sd),
            "n": p.n, "low": none(p.ci.low), "high": none(p.ci.high), "p": none(p.p), "seeds": seeds,
            "values_a": [va[s] for s in seeds], "values_b": [vb[s] for s in seeds]}


def evaluate_claim(summary: Mapping, claim: Mapping) -> dict:
    """A declared claim judged on the summary: {"name", "text", "metric", "cells", "direction", "verdict",
    "primary": compare(...), "secondary": [compare(...) per secondary key]}.

    Args:
        summary: a summary dict.
        claim: a resolved claim.

    Returns:
        The judged claim.
    """
    a, b = claim["cells"]
    primary = compare(summary, claim["metric"], a, b)
    interval = (primary["low"], primary["high"]) if primary["low"] is not None else (math.nan, math.nan)
    return {**{k: claim[k] for k in ("name", "text", "metric", "cells", "direction")},
            "verdict": stats.verdict(interval, claim["direction"]), "primary": primary,
            "secondary": [compare(summary, key, a, b) for key in claim.get("secondary", [])],
            **({"published": claim["published"]} if "published" in claim else {})}


def papers_table(claims: Sequence[Mapping]) -> str:
    """Markdown: the paper's published values beside this grid's for every claim that declares them, with
    where they come from and how the setups differ.

    Args:
        claims: the judged claims.

    Returns:
        The markdown table.
    """
    lines = ["| claim | metric | paper: A vs B (Δ) | this grid: A vs B, Δ [95% CI] (n) | verdict | source; setup |",
             "|---|---|---|---|---|---|"]
    for c in claims:
        pub = c.get("published")
        if not pub:
            continue
        p = c["primary"]
        lines.append(f"| {c['text']} | {p['key']} | {fmt(pub['a'])} vs {fmt(pub['b'])} ({fmt(pub['a'] - pub['b'])}) | "
                     f"{fmt(p['mean_a'])} vs {fmt(p['mean_b'])}, {diff_cell(p)} ({p['n']}) | {c['verdict']} | "
                     f"{pub['source']}; {pub['setup']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def fmt(value, digits: int = 3) -> str:
    """A number for tables and text: 3 significant digits, "—" for None/NaN.

    Args:
        value: a number, None or NaN.
        digits: significant digits.

    Returns:
        The text.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def diff_cell(c: Mapping) -> str:
    """A paired difference as a table cell: "Δ [low, high]" ("—" without one).

    Args:
        c: a `compare` result.

    Returns:
        The text.
    """
    if c["diff"] is None:
        return "—"
    ci = f" [{fmt(c['low'])}, {fmt(c['high'])}]" if c["low"] is not None else " [—]"
    return f"{fmt(c['diff'])}{ci}"


def claims_table(claims: Sequence[Mapping]) -> str:
    """Markdown: one row per claim (primary metric) and one per secondary metric, with the paired
    difference A − B, its 95% interval, n and p; the verdict on the primary row.

    Args:
        claims: the judged claims.

    Returns:
        The markdown table.
    """
    lines = ["| claim | metric | A − B | mean A vs B | Δ [95% CI] | n | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        rows = [(c["primary"], c["verdict"], c["text"])]
        rows += [(s, "(secondary)", "") for s in c["secondary"]]
        for cmp, verdict, text in rows:
            lines.append(f"| {text} | {cmp['key']} | {cmp['a']} − {cmp['b']} | {fmt(cmp['mean_a'])} vs "
                         f"{fmt(cmp['mean_b'])} | {diff_cell(cmp)} | {cmp['n']} | {fmt(cmp['p'], 2)} | {verdict} |")
    return "\n".join(lines)


def headline_table(summary: Mapping, keys: Sequence[str]) -> str:
    """Markdown table of the headline keys (mean ± sample SD over seeds) per cell.

    Args:
        summary: a summary dict.
        keys: the result keys, one column each.

    Returns:
        The markdown table.
    """
    lines = ["| cell | seeds | status | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for row in summary["cells"]:
        cells = []
        for k in keys:
            part, key = ("init", k[5:]) if k.startswith("init.") else ("final", k)
            s = row[part].get(key)
            if s is None or s["mean"] is None:
                cells.append("—")
            else:
                cells.append(f"{s['mean']:.4g}" + (f" ± {s['std']:.2g}" if s["std"] is not None else ""))
        status = ", ".join(f"{v} {k}" for k, v in sorted(row["status"].items()))
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | {status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
