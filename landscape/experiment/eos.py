"""Edge of stability as Cohen et al. do it: a step-size sweep of full-batch GD (and Adam) on nets that train.

    run_eos("records/eos")                                   # every (net, loss, η, seed) missing, resumable
    runs = load_eos("records/eos")                           # (optimizer, net, loss, η) → per-seed records
    rows = judge_eos(runs)                                   # per cell: every statistic, the Holm-corrected verdicts

Claims (Cohen, Kaur, Li, Kolter & Talwalkar 2021, "Gradient descent on neural networks typically occurs at
the edge of stability", §3, Fig. 1-2; Cohen et al. 2022, "Adaptive gradient methods at the edge of
stability", §3): under full-batch gradient descent with step size η the sharpness λmax first rises
(progressive sharpening) until it reaches 2/η, then hovers at (just above) 2/η while the loss keeps falling
non-monotonically; for full-batch Adam the preconditioned sharpness λmax(P⁻¹H) does the same at
(2 + 2β₁)/((1 − β₁)η). Their main figure uses the square loss; they report the same with cross-entropy, where
the sharpness drops late in training as the loss goes to 0.

Setup (docs/methods.md §G.7): the first `n_samples` MNIST-1D training samples, full batch; nets that train
(`NETS`; the ReLU net's seed-0 pilots reach 99% training accuracy under both losses, and every run's final
loss and accuracy are reported): Cohen et al.'s small fully connected ReLU net (two hidden layers of 128, the
zoo's post-activation plain net, Glorot init) and the zoo's post-activation residual FC net with three hidden
layers (at depth 20 its growing stream kept it from training); both losses of `landscape.train.losses` (mse:
½‖f(x) − e_y‖², ce). The step sizes of a (net, loss) are fractions `FRACTIONS` of 2/λ₀, λ₀ the sharpness at
initialization of seed 0 (`INITIAL_SHARPNESS`, measured before the grid): below 2/λ₀ the run starts stable
and must sharpen to reach the edge, above it starts beyond the edge. Adam (β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸)
on the ReLU net with the square loss at `ADAM_FRACTIONS` of the threshold at λ_P after 20 steps at η = 10⁻⁵
(`ADAM_NETS`). The curvature monitor (`landscape.hessian.monitor`) measures every `every` steps on the same
samples, so λmax is the sharpness of the loss being descended and eos_ratio = λmax·η/2 (GD) or
λ_P·η(1 − β₁)/(2 + 2β₁) (Adam) is 1 at the edge.

Declared before the grid, per (optimizer, net, loss, η) cell, one value per seed:
- primary `edge_ratio`: the median eos_ratio over the measurements after the run first reaches
  eos_ratio ≥ 0.9 (runs that never do are counted in `reached` and left out); the geometric mean over
  seeds with its log-scale 95% t interval. Verdict: "at the edge" when the equivalence test (two one-sided
  t-tests on log edge_ratio against the band [0.8, 1.25], `EDGE`) has Holm-adjusted p < 0.05 within the
  family of all cells; "above" / "below" when the simultaneous (Bonferroni, level 1 − 0.05/m) interval lies
  wholly above / below the band; otherwise inconclusive.
- `sharpening`: λmax at the first edge reach (or its maximum, if never reached) over λ₀, for cells that
  start stable (η < 2/λ₀); Cohen et al. predict > 1: log-scale t interval and one-sided p, Holm-adjusted
  in the same family.
Secondary (reported, never a verdict): `reached` (runs reaching 0.9, Wilson interval), the first step at
0.9, the fraction of post-edge measurements within [0.8, 1.25], the largest eos_ratio, the final loss and
training accuracy, diverged runs. Added post hoc, after the first cells were seen (never a verdict): for a
run that starts above the edge, the first reach of 0.9 is step 0, so the declared edge ratio also counts the
catapult that follows; `reentry_edge_ratio` is the median after the run re-enters 0.9 from below, and
`sharpening_from_min` the rise of the sharpness from its lowest value before that re-entry (or the end).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from landscape import stats
from landscape.data import load_data
from landscape.hessian.monitor import CurvatureMonitor, MonitorOptions
from landscape.io import read_json, write_json
from landscape.models import build
from landscape.train.losses import resolve_loss

NETS = {"fc_relu": {"kind": "plain", "depth": 2, "width": 128},
        "fc_res": {"kind": "residual", "depth": 3, "width": 128}}
LABELS = {"fc_relu": "FC ReLU, 2 hidden", "fc_res": "residual FC, 3 hidden"}
LOSSES = ("mse", "ce")
FRACTIONS = (0.35, 0.7, 1.4, 2.8)
ADAM_FRACTIONS = (0.35, 0.7, 1.4, 2.8)
ADAM_NETS = ("fc_relu",)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}
# λ₀ (seed 0, the first n_samples, measured before the grid): GD's λmax of H; Adam's λmax of P⁻¹H after step 1
INITIAL_SHARPNESS: dict[tuple[str, str, str], float] = {
    ("gd", "fc_relu", "mse"): 17.83, ("gd", "fc_relu", "ce"): 2.22,       # initial loss 1.28, 2.34
    ("gd", "fc_res", "mse"): 144.3, ("gd", "fc_res", "ce"): 29.17,        # initial loss 8.55, 3.13
    ("adam", "fc_relu", "mse"): 4327.0,
}
EDGE = (0.8, 1.25)
REACH = 0.9
ALPHA = 0.05


@dataclass(frozen=True)
class EosConfig:
    """The sweep's settings.

    Attributes:
        n_samples: training samples (one full batch).
        steps: the most optimizer steps of a run.
        every: measure every this many steps.
        acc_goal: stop once the training accuracy reaches this (measured at that step too), as Cohen et al.'s
            code allows (`acc_goal`): what follows memorization is not the training they study.
        seeds: initialization seeds.
        tol: the monitor's relative residual for λmax.
    """

    n_samples: int = 1000
    steps: int = 3000
    every: int = 10
    acc_goal: float = 0.99
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tol: float = 1e-3


def step_sizes(optimizer: str, net: str, loss: str) -> list[float]:
    """The cell's η: `FRACTIONS` (GD) or `ADAM_FRACTIONS` (Adam) of the stability limit at λ₀.

    Args:
        optimizer: "gd" or "adam"; net, loss: the cell.

    Returns:
        The step sizes, 3 significant digits.
    """
    lam0 = INITIAL_SHARPNESS[(optimizer, net, loss)]
    if optimizer == "gd":
        return [float(f"{f * 2 / lam0:.3g}") for f in FRACTIONS]
    b1 = ADAM["betas"][0]
    return [float(f"{f * (2 + 2 * b1) / ((1 - b1) * lam0):.3g}") for f in ADAM_FRACTIONS]


def grid() -> list[tuple[str, str, str, float]]:
    """Every declared (optimizer, net, loss, η) cell: GD for both nets and losses, Adam with the square loss."""
    cells = [("gd", net, loss, lr) for net in NETS for loss in LOSSES for lr in step_sizes("gd", net, loss)]
    return cells + [("adam", net, "mse", lr) for net in ADAM_NETS for lr in step_sizes("adam", net, "mse")]


def run_one(optimizer: str, net: str, loss: str, lr: float, seed: int, cfg: EosConfig, X: torch.Tensor,
            y: torch.Tensor) -> dict:
    """Full-batch `optimizer` on (X, y) with the curvature monitor on the same samples; a run stops after
    `cfg.steps` steps, at `cfg.acc_goal` training accuracy, or at a non-finite loss.

    Args:
        optimizer: "gd" (SGD without momentum) or "adam"; net: a key of `NETS`; loss: "mse" or "ce".
        lr: the step size; seed: the initialization; cfg: the sweep; X, y: the full batch.

    Returns:
        {"cell": {...}, "seed", "rows": [{"step", "loss", "acc", "lambda_max", "eos_ratio"[, "lambda_p"]}] at
        every measured step and the last (the loss and accuracy before that step's update), "diverged": bool,
        "cpu_seconds": the run's user + system time}.
    """
    loss_fn = resolve_loss(loss)
    model = build("fc", seed=seed, **NETS[net])
    if optimizer == "gd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        metrics = ("lambda_max", "eos_ratio")
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, **ADAM)
        metrics = ("lambda_max", "preconditioned_lambda_max", "eos_ratio")
    mon = CurvatureMonitor(loss_fn, (X, y), optimizer=opt, every=cfg.every,
                           options=MonitorOptions(k=1, metrics=metrics, tol=cfg.tol, seed=seed))
    rows, diverged, c0 = [], False, time.process_time()
    for step in range(cfg.steps + 1):
        out = model(X)
        value = loss_fn(out, y)
        if not math.isfinite(value.item()):
            diverged = True
            break
        acc = (out.argmax(1) == y).float().mean().item()
        done = step == cfg.steps or acc >= cfg.acc_goal
        if step % cfg.every == 0 or done:
            rows.append({"step": step, "loss": value.item(), "acc": acc})
            if step > 0 or optimizer == "gd":
                mon.measure(model, step)
                rows[-1].update(_measured(mon.records, step))
        if done:
            break
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return {"cell": {"optimizer": optimizer, "net": net, "loss": loss, "lr": lr}, "seed": seed, "rows": rows,
            "diverged": diverged, "cpu_seconds": time.process_time() - c0}


def _measured(records: Sequence[Mapping], step: int) -> dict:
    names = {"lambda_max": "lambda_max", "preconditioned_lambda_max": "lambda_p", "eos_ratio": "eos_ratio"}
    return {names[r["metric"]]: r["value"] for r in records if r["step"] == step and r["metric"] in names}


def run_path(records: Path, optimizer: str, net: str, loss: str, lr: float, seed: int) -> Path:
    """RECORDS/<optimizer>_<net>_<loss>_lr<η>_seed<s>.json.

    Args:
        records: the records directory; optimizer, net, loss, lr, seed: the run.

    Returns:
        The record's path.
    """
    return Path(records) / f"{optimizer}_{net}_{loss}_lr{lr:g}_seed{seed}.json"


def run_eos(records: str | Path, cfg: EosConfig = EosConfig(), *, only: str | None = None,
            log: Callable[[str], None] = lambda s: None) -> dict:
    """Run every missing (cell, seed) of `grid()` into RECORDS/<optimizer>_<net>_<loss>_lr<η>_seed<s>.json.

    Args:
        records: the records directory (committed), with config.json of the sweep.
        cfg: the sweep's settings.
        only: run only the cells whose file name contains this string.
        log: called with each finished record's path.

    Returns:
        `load_eos(records)`.
    """
    records = Path(records)
    records.mkdir(parents=True, exist_ok=True)
    write_json(records / "config.json", {**asdict(cfg), "nets": NETS, "fractions": FRACTIONS,
                                         "adam_fractions": ADAM_FRACTIONS, "adam": ADAM,
                                         "initial_sharpness": [[*k, v] for k, v in INITIAL_SHARPNESS.items()]})
    data = load_data("mnist1d", "train")
    X, y = data.X[:cfg.n_samples], data.y[:cfg.n_samples]
    for cell in grid():
        for seed in cfg.seeds:
            path = run_path(records, *cell, seed)
            if (only is None or only in path.name) and not path.exists():
                write_json(path, run_one(*cell, seed, cfg, X, y), indent=None, digits=6)
                log(str(path))
    return load_eos(records)


def load_eos(records: str | Path) -> dict[tuple[str, str, str, float], list[dict]]:
    """(optimizer, net, loss, η) → the per-seed records found, ordered by seed.

    Args:
        records: the records directory.

    Returns:
        {(optimizer, net, loss, η): [record, ...]}.
    """
    out: dict[tuple, list[dict]] = {}
    for path in sorted(Path(records).glob("*_seed*.json")):
        rec = read_json(path)
        c = rec["cell"]
        out.setdefault((c["optimizer"], c["net"], c["loss"], float(c["lr"])), []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r["seed"])
    return out


# ---- statistics and verdicts ----------------------------------------------------------------------------------

def run_keys(rec: Mapping) -> dict:
    """One run's statistics (module docstring): edge_ratio, reached, first_step, within_band, max_ratio,
    initial_ratio, sharpening (over the run's own first measurement: λmax at step 0 for GD, λ_P at the first
    measured step for Adam), final loss and accuracy, diverged.

    Args:
        rec: one run's record.

    Returns:
        {key: value}, NaN where undefined (a run that never reaches 0.9 has no edge ratio).
    """
    rows = [r for r in rec["rows"] if r.get("eos_ratio") is not None and math.isfinite(r["eos_ratio"])]
    ratio = np.array([r["eos_ratio"] for r in rows])
    hit = np.flatnonzero(ratio >= REACH)
    after = ratio[hit[0]:] if hit.size else np.zeros(0)
    key = "lambda_p" if rec["cell"]["optimizer"] == "adam" else "lambda_max"
    lam = np.array([r[key] for r in rows])
    lam0 = float(lam[0]) if lam.size else math.nan
    peak = float(lam[hit[0]]) if hit.size else (float(lam.max()) if lam.size else math.nan)
    last = rec["rows"][-1] if rec["rows"] else {}
    # post hoc (added after the first cells were seen; reported, never a verdict): the edge ratio after the run
    # re-enters 0.9 once it has been below it (for runs that start above the edge: after the catapult), and
    # the sharpening from the lowest sharpness before that re-entry (or the end)
    below = np.flatnonzero(ratio < REACH)
    back = hit[hit > below[0]] if below.size and hit.size else np.zeros(0, int)
    reentry = ratio[back[0]:] if back.size else np.zeros(0)
    stop = back[0] if back.size else len(lam) - 1
    low = int(np.argmin(lam[:stop + 1])) if lam.size else 0
    rise = float(lam[low:stop + 1].max() / lam[low]) if lam.size and lam[low] > 0 else math.nan
    return {"edge_ratio": float(np.median(after)) if after.size else math.nan,
            "reentry_edge_ratio": float(np.median(reentry)) if reentry.size else math.nan,
            "sharpening_from_min": rise,
            "reached": bool(hit.size), "first_step": float(rows[hit[0]]["step"]) if hit.size else math.nan,
            "within_band": float(np.mean((after >= EDGE[0]) & (after <= EDGE[1]))) if after.size else math.nan,
            "max_ratio": float(ratio.max()) if ratio.size else math.nan,
            "initial_ratio": float(ratio[0]) if ratio.size else math.nan,
            "sharpening": peak / lam0 if lam0 and math.isfinite(lam0) else math.nan,
            "final_loss": math.nan if rec["diverged"] else last.get("loss", math.nan),
            "final_acc": math.nan if rec["diverged"] else last.get("acc", math.nan),
            "diverged": bool(rec["diverged"])}


def _one_sided_log(values: Sequence[float], null: float, greater: bool) -> float:
    """p of the one-sided t-test of mean log v against log(null) (H₁: above when `greater`)."""
    from scipy import special

    v = np.log(stats.finite(values))
    n = v.size
    if n < 2:
        return math.nan
    sd = float(v.std(ddof=1))
    if sd == 0:
        return 0.0 if (v[0] > math.log(null)) == greater else 1.0
    t = (float(v.mean()) - math.log(null)) / (sd / math.sqrt(n))
    return float(special.stdtr(n - 1, -t if greater else t))


def summarize_cell(cell: tuple, recs: Sequence[Mapping]) -> dict:
    """Per-seed keys of one cell, their summaries (log-t intervals for the ratios), and the tests' p-values.

    Args:
        cell: (optimizer, net, loss, η); recs: its runs.

    Returns:
        {optimizer, net, loss, lr, n, stable_at_init, edge_ratio, sharpening, reached (Interval dicts), the
        other statistics (`stats.summarize`), diverged, per_seed, p_edge, p_sharpening}.
    """
    opt = cell[0]
    keys = [run_keys(r) for r in recs]
    col = {k: [kk[k] for kk in keys] for k in keys[0]} if keys else {}
    edge = [v for v in col.get("edge_ratio", []) if math.isfinite(v)]
    sharp = [v for v, k in zip(col.get("sharpening", []), keys) if math.isfinite(v)]
    stable = all(k["initial_ratio"] < 1 for k in keys) if keys else False
    row = {"optimizer": opt, "net": cell[1], "loss": cell[2], "lr": cell[3], "n": len(recs), "stable_at_init": stable,
           "edge_ratio": stats.log_ci(edge).as_dict() if edge else None,
           "sharpening": stats.log_ci(sharp).as_dict() if sharp and stable else None,
           "reached": stats.wilson_ci(sum(col.get("reached", [])), len(recs)).as_dict() if recs else None,
           "diverged": int(sum(col.get("diverged", []))), "per_seed": col}
    for key in ("first_step", "within_band", "max_ratio", "final_loss", "final_acc"):
        row[key] = stats.summarize(col.get(key, []))
    for key in ("reentry_edge_ratio", "sharpening_from_min"):                     # post hoc
        v = [x for x in col.get(key, []) if math.isfinite(x) and x > 0]
        row[key] = stats.log_ci(v).as_dict() if v else None
    row["p_edge"] = max(_one_sided_log(edge, EDGE[0], True), _one_sided_log(edge, EDGE[1], False)) if edge else math.nan
    row["p_sharpening"] = _one_sided_log(sharp, 1.0, True) if sharp and stable else math.nan
    return row


def judge_eos(runs: Mapping[tuple, Sequence[Mapping]]) -> list[dict]:
    """Every cell's summary with the declared verdicts (module docstring), Holm within all cells' tests.

    Args:
        runs: (optimizer, net, loss, η) → records.

    Returns:
        `summarize_cell` rows with p_edge_holm, p_sharpening_holm, edge_verdict and sharpening_verdict.
    """
    rows = [summarize_cell(cell, recs) for cell, recs in sorted(runs.items())]
    tests = [(r, "p_edge") for r in rows if math.isfinite(r["p_edge"])]
    tests += [(r, "p_sharpening") for r in rows if math.isfinite(r["p_sharpening"])]
    m = max(1, len(tests))
    for (r, key), p in zip(tests, stats.holm([r[key] for r, key in tests])):
        r[key + "_holm"] = p
    for r in rows:
        r["edge_verdict"] = _edge_verdict(r, m)
        p = r.get("p_sharpening_holm", math.nan)
        r["sharpening_verdict"] = (None if r["sharpening"] is None else
                                   "agrees" if p < ALPHA else "inconclusive")
    return rows


def _edge_verdict(row: Mapping, m: int) -> str:
    """"at the edge" (Holm-adjusted equivalence p < α), "above" / "below" (the simultaneous 1 − α/m interval
    outside the band), "inconclusive", or "never reached"."""
    e = row["edge_ratio"]
    if e is None:
        return "never reached"
    if row.get("p_edge_holm", math.nan) < ALPHA:
        return "at the edge"
    wide = stats.log_ci(row["per_seed"]["edge_ratio"], level=1 - ALPHA / m) if e["n"] > 1 else None
    if wide is not None and wide.defined and wide.low > EDGE[1]:
        return "above"
    if wide is not None and wide.defined and wide.high < EDGE[0]:
        return "below"
    return "inconclusive"
