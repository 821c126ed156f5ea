"""Round-2 claim tables for RESULTS.md from finished quick grids (runs/<name>/summary.json).

    python experiments/round2_report.py                       # every round-2 grid that has a summary.json
    python experiments/round2_report.py oh2025_mechanism      # one grid
    python experiments/round2_report.py --json runs/round2.json   # also write every number as JSON

Each grid's claims are the ones declared in its TOML (primary metric, cells A and B, direction, secondary
keys). The paired difference A − B over seeds, its 95% Student-t interval, n, the paired t-test p and the
verdict come from `landscape.experiment.summary.evaluate_claim` (one rule, `landscape.stats.verdict`).

Every per-run key comes from result.json, derived by landscape.experiment.keys (the results module): the
block mean of every probe metric (e.g. overlap_act_centered_frac_mean), grad_absdev_mean (mean |log10 r_l|
over the residual blocks, transitions apart), the slq_/exact_ spectrum statistics; a key not measured at
the last epoch comes from the latest epoch that has it (keys.final_keys, listed under the table).
Secondary keys added after the runs (beside those the TOMLs declared): `extra_secondary`.
Extra checks: Liu's per-connection skip-path factor gain^(1/L) against λ; Spearman's ρ over runs between
the degenerate fraction ρ and train accuracy (Orhan's mechanism grid).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from landscape import stats
from landscape.experiment.config import load_experiment
from landscape.experiment.summary import diff_cell, evaluate_claim, fmt, seed_stats
from landscape.io import jsonable

GRIDS = ("zaeemzadeh2018_transitions", "oh2025_mechanism", "liu2020_transformer", "orhan2018_mechanism",
         "orhan2018_biasreg", "orhan2018_size", "zaeemzadeh2018")  # the last: round 1's FC grid, re-run
ROOT = Path(__file__).resolve().parent.parent


def claim_rows(claims: list[dict]) -> list[str]:
    lines = ["| claim | metric | A vs B: mean A / mean B | Δ = A − B [95% CI] | n | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in claims:
        a, b = c["cells"]
        p = c["primary"]
        lines.append(f"| **{c['text']}** (`{a}` − `{b}`, predicted {'>' if c['direction'] == 'greater' else '<'} 0) "
                     f"| {p['key']} | {fmt(p['mean_a'])} / {fmt(p['mean_b'])} | {diff_cell(p)} | {p['n']} | "
                     f"{fmt(p['p'], 2)} | **{c['verdict']}** |")
        for s in c["secondary"]:
            lines.append(f"| ↳ secondary | {s['key']} | {fmt(s['mean_a'])} / {fmt(s['mean_b'])} | {diff_cell(s)} | "
                         f"{s['n']} | {fmt(s['p'], 2)} | (secondary) |")
    return lines


def extra_secondary(name: str) -> list[str]:
    """Keys added to every claim's secondary list for this grid (computed here, see the module docstring)."""
    return {"zaeemzadeh2018_transitions": ["grad_absdev_mean", "init.grad_absdev_mean"],
            "zaeemzadeh2018": ["grad_absdev_mean", "init.grad_absdev_mean"],
            "orhan2018_mechanism": ["overlap_weight_frac_mean", "overlap_act_centered_frac_mean"],
            "orhan2018_size": ["overlap_weight_frac_mean", "overlap_act_centered_frac_mean"],
            "orhan2018": ["exact_bulk_degenerate_ratio", "exact_effective_rank", "overlap_act_centered_mean",
                          "overlap_weight_frac_mean", "small_sv_frac_mean"],
            "orhan2018_biasreg": ["overlap_weight_frac_mean", "overlap_act_centered_frac_mean"]}.get(name, [])


def degeneracy_rows(summary: dict) -> list[str]:
    """Per cell: each degeneracy statistic as mean over seeds with the mean of the quadrature's guaranteed
    bracket [low, high] (SLQ, `SpectralDensity.mass_bounds`), and the exact spectrum's where it was computed."""
    def val(row: dict, key: str) -> str:
        s = row["final"].get(key) or {}
        return "—" if s.get("mean") is None else fmt(s["mean"])

    def bracket(row: dict, key: str) -> str:
        lo, hi = (row["final"].get(f"{key}_{e}") or {} for e in ("low", "high"))
        if lo.get("mean") is None:
            return val(row, key)
        return f"{val(row, key)} [{fmt(lo['mean'])}, {fmt(hi['mean'])}]"

    lines = ["| cell | n | SLQ μ(abs(λ) < 10⁻³ λmax) [bracket] | SLQ μ(abs(λ) < 10⁻² median abs(λ)) [bracket] | "
             "SLQ effective rank | exact μ(abs(λ) < 10⁻³ λmax) | exact μ(abs(λ) < 10⁻² median abs(λ)) | "
             "exact effective rank |", "|---|---|---|---|---|---|---|---|"]
    for row in summary["cells"]:
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | {bracket(row, 'slq_degenerate_ratio')} | "
                     f"{bracket(row, 'slq_bulk_degenerate_ratio')} | {val(row, 'slq_effective_rank')} | "
                     f"{val(row, 'exact_degenerate_ratio')} | {val(row, 'exact_bulk_degenerate_ratio')} | "
                     f"{val(row, 'exact_effective_rank')} |")
    return lines


def liu_gain(summary: dict, per_block: int = 2) -> list[dict]:
    """Skip-path factor of xSkip at init: the end-to-end gain over B blocks of `per_block` connections each
    (attention and MLP: 2), per seed gain^(1/(per_block·B)) per connection, mean and t interval, vs λ."""
    out = []
    for row in summary["cells"]:
        if row["base"] != "xskip":
            continue
        lam = float(str(row["setting"]["model_config.connect"]).rpartition(":")[2])
        gains = row["init"].get("grad_gain", {}).get("values", [])
        blocks = row["init"].get("n_blocks", {}).get("values", [])
        L = per_block * blocks[0] if blocks else None
        factors = [g ** (1 / (per_block * B)) for g, B in zip(gains, blocks) if g and B and g > 0]
        out.append({"cell": row["cell"], "lambda": lam, "L": L, "gain": seed_stats(gains),
                    "factor": stats.summarize(factors), "lambda_L": lam ** L if L else None})
    return out


def orhan_spearman(summary: dict) -> dict:
    xs, ys = [], []
    for row in summary["cells"]:
        if row["base"] != "degenerate":
            continue
        rho = float(str(row["setting"]["model_config.connect"]).rpartition(":")[2])
        for v in row["final"].get("train_acc", {}).get("values", []):
            xs.append(rho)
            ys.append(v)
    return stats.spearman(xs, ys)


def report(name: str, root: Path = ROOT / "runs") -> tuple[list[str], dict]:
    runs = root / name
    toml = ROOT / "experiments" / f"{name}.toml"
    if not (runs / "summary.json").exists():
        return [f"### {name}: NOT RUN", "", f"`nice -n 15 python -m landscape.experiment experiments/{name}.toml "
                f"--out runs/{name}`", ""], {"name": name, "status": "not run"}
    exp = load_experiment(toml)
    summary = json.loads((runs / "summary.json").read_text())
    n_runs = sum(len(r["seeds"]) for r in summary["cells"])
    claims = []
    for claim in exp.claims:
        claim = {**claim, "secondary": claim["secondary"] + extra_secondary(name)}
        claims.append(evaluate_claim(summary, claim))
    git = summary.get("git") or {}
    commit = f"{git.get('commit', '?')[:7]}{' (dirty)' if git.get('dirty') else ''}" if isinstance(git, dict) else git
    lines = [f"### {name}", "",
             f"{exp.profile_description}. {n_runs} of {len(exp.runs)} runs finished; summarized at git {commit}.", ""]
    status = {s: 0 for r in summary["cells"] for s in r["status"]}
    for r in summary["cells"]:
        for s, k in r["status"].items():
            status[s] += k
    lines += [f"Run status: {', '.join(f'{k} {v}' for k, v in sorted(status.items()))}.", ""]
    lines += claim_rows(claims) + [""]
    shown = {k.removeprefix("init.") for c in claims for k in [c["metric"], *(s["key"] for s in c["secondary"])]}
    shown |= set(exp.headline)
    earlier = sorted({f"{k} (epoch {e})" for r in summary["cells"] for k, e in r.get("from_epoch", {}).items()
                      if k in shown})
    if earlier:
        lines += ["Not measured at the last epoch, so taken from the latest epoch that has them: " + ", ".join(earlier)
                  + ".", ""]
    extra: dict = {}
    if name == "liu2020_transformer":
        extra["liu_gain"] = liu_gain(summary)
        lines += ["Skip-path gain at init (end to end over L = 2 connections × 4 blocks) and its factor per "
                  "connection, gain^(1/L) (mean [95% t CI] over seeds), against the λ^L prediction:", "",
                  "| cell | λ | L | gain at init (mean ± SD) | λ^L | factor per connection | λ |",
                  "|---|---|---|---|---|---|---|"]
        for g in extra["liu_gain"]:
            f, gain = g["factor"], g["gain"]
            lines.append(f"| {g['cell']} | {g['lambda']} | {g['L']} | {fmt(gain['mean'])} ± {fmt(gain['std'])} | "
                         f"{fmt(g['lambda_L'])} | {fmt(f['mean'])} [{fmt(f['low'])}, {fmt(f['high'])}] "
                         f"(n = {f['n']}) | {g['lambda']} |")
        lines.append("")
    if name == "zaeemzadeh2018":
        keys = ["init.grad_dev_max", "grad_dev_max", "init.grad_absdev_mean", "grad_absdev_mean",
                "init.grad_dev_transition_max", "grad_dev_transition_max"]
        lines += ["Per depth, residual blocks only (the input layer, 40 → width without a skip, is the transition), "
                  "mean [95% t CI] over seeds:", "", "| cell | " + " | ".join(keys) + " |",
                  "|" + "---|" * (len(keys) + 1)]
        for row in summary["cells"]:
            vals = []
            for k in keys:
                part, key = ("init", k[5:]) if k.startswith("init.") else ("final", k)
                st = row[part].get(key) or {}
                vals.append("—" if st.get("mean") is None else
                            f"{fmt(st['mean'])} [{fmt(st['low'])}, {fmt(st['high'])}] (n = {st['n']})")
            lines.append(f"| {row['cell']} | " + " | ".join(vals) + " |")
        lines.append("")
    if name.startswith("orhan2018") and any("slq_degenerate_ratio" in r["final"] for r in summary["cells"]):
        lines += ["Degenerate mass at the last epoch, λmax-relative and scale-free (mass below 10⁻² × the median "
                  "|λ|), mean over seeds; SLQ values with the mean bracket that the quadrature guarantees "
                  "(a bracket as wide as [0, 0.8] means the Krylov run cannot resolve that mass):", ""]
        lines += degeneracy_rows(summary) + [""]
    if name == "orhan2018_mechanism":
        sp = orhan_spearman(summary)
        extra["spearman_rho_train_acc"] = sp
        lines += [f"Spearman's ρ between the degenerate fraction ρ and final train accuracy over all degenerate "
                  f"runs: {fmt(sp['rho'])} [{fmt(sp['low'])}, {fmt(sp['high'])}] (n = {sp['n']}, "
                  f"p = {fmt(sp['p'], 2)}); "
                  f"predicted < 0: **{stats.verdict((sp['low'], sp['high']), 'less')}**.", ""]
    cells = ["| cell | seeds | " + " | ".join(exp.headline) + " |", "|" + "---|" * (len(exp.headline) + 2)]
    for row in summary["cells"]:
        vals = []
        for k in exp.headline:
            part, key = ("init", k[5:]) if k.startswith("init.") else ("final", k)
            s = row[part].get(key)
            vals.append("—" if not s or s["mean"] is None else
                        f"{fmt(s['mean'])} ± {fmt(s['std'])}" if s["std"] is not None else fmt(s["mean"]))
        cells.append(f"| {row['cell']} | {len(row['seeds'])} | " + " | ".join(vals) + " |")
    lines += ["Per cell (mean ± sample SD over seeds):", ""] + cells + [""]
    return lines, {"name": name, "claims": claims, **extra}


def round1_rejudged() -> list[str]:
    """Round 1's verdicts re-judged with the one rule, from the per-seed values (or means and sample SDs, n = 3)
    printed in the round-1 section of RESULTS.md."""
    from scipy import stats as sst

    lines = ["| round-1 comparison | Δ [95% CI] | n | p | verdict (one rule) |", "|---|---|---|---|---|"]
    rows = [("Oh: Orthogonal-F − linear test acc (FC postact stand-in)", [0.581, 0.553, 0.559], [0.540, 0.563, 0.531],
             "greater"),
            ("Orhan: exact mass below 1e-7 λmax, plain − residual", [0.230, 0.272, 0.197], [0.160, 0.104, 0.092],
             "greater"),
            ("Orhan: exact mass below 1e-7 λmax, plain − hyper", [0.230, 0.272, 0.197], [0.071, 0.123, 0.124],
             "greater")]
    for text, a, b, direction in rows:
        p = stats.paired(a, b)
        lines.append(f"| {text} (paired by seed) | {fmt(p.mean)} [{fmt(p.ci.low)}, {fmt(p.ci.high)}] | {p.n} | "
                     f"{fmt(p.p, 2)} | {stats.verdict(p.ci, direction)} |")
    # only means and SDs were kept for the exact degenerate mass at 1e-3: Welch interval from them
    for name, (m, s) in (("residual", (0.945, 0.005)), ("hyper", (0.941, 0.004))):
        m1, s1, n = 0.902, 0.039, 3
        se = math.sqrt(s1 ** 2 / n + s ** 2 / n)
        df = se ** 4 / ((s1 ** 2 / n) ** 2 / (n - 1) + (s ** 2 / n) ** 2 / (n - 1))
        q = stats.t_quantile(0.975, df) if float(df).is_integer() else float(sst.t.ppf(0.975, df))
        d = m1 - m
        pval = float(2 * sst.t.sf(abs(d / se), df))
        lines.append(f"| Orhan: exact mass below 1e-3 λmax, plain − {name} (Welch, from means ± SD) | {fmt(d)} "
                     f"[{fmt(d - q * se)}, {fmt(d + q * se)}] | 3 + 3 | {fmt(pval, 2)} | "
                     f"{stats.verdict((d - q * se, d + q * se), 'greater')} |")
    # Spearman over the 14 cells' 3-seed means: Fisher-z interval as landscape.stats.spearman
    for stat, rho, direction in (("dead fraction", 0.29, "less"), ("overlap (raw)", 0.53, "less"),
                                 ("effective rank", -0.12, "greater"), ("SLQ degenerate mass", -0.30, "less")):
        n = 14
        half = 1.959964 * math.sqrt(1.06 / (n - 3))
        lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
        t = rho * math.sqrt((n - 2) / (1 - rho ** 2))
        lines.append(f"| Orhan: Spearman ρ(train acc, {stat}) over 14 cell means | ρ = {fmt(rho)} [{fmt(lo)}, "
                     f"{fmt(hi)}] | 14 | {fmt(float(2 * sst.t.sf(abs(t), n - 2)), 2)} | "
                     f"{stats.verdict((lo, hi), direction)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grids", nargs="*", default=list(GRIDS))
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="the directory holding runs/<name> (default runs/)")
    ap.add_argument("--round1", action="store_true", help="also print round 1's verdicts re-judged with the one rule")
    args = ap.parse_args(argv)
    if args.round1:
        print("\n".join(round1_rejudged()) + "\n")
    everything = []
    for name in args.grids:
        lines, data = report(name, Path(args.runs))
        print("\n".join(lines))
        everything.append(data)
    if args.json:
        Path(args.json).write_text(json.dumps(jsonable(everything), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
