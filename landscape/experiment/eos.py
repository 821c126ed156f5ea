"""Edge of stability on the FC zoo: does the sharpness rise to 2/η and stay there, plain vs residual?

    runs = run_eos("runs/eos")             # 3 nets × 2 learning rates × 5 seeds, resumable (one JSONL per run)
    rows = summarize_eos(load_eos("runs/eos"))                 # per (net, η): the statistics below
    plot_eos(load_eos("runs/eos"), "figures/eos_fc_mnist1d")   # λmax vs 2/η, gradient share, negative mass

Setup (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of stability"):
full-batch gradient descent (SGD without momentum on the whole training subset, the first `n_samples`
MNIST-1D training samples) on depth × width FC nets, cross-entropy. The curvature monitor measures on the
same samples, so λmax is the sharpness of the very loss being descended and the stability limit of
gradient descent on its local quadratic model is exactly λmax = 2/η (eos_ratio = λmax·η/2 = 1,
docs/methods.md §G.4). Every `every` steps it records λmax (± residual), the gradient's share of the
top-k eigenspace ‖U_kᵀg‖²/‖g‖² (Gur-Ari et al. 2018, k = 10 classes, §G.3) and, every `full_every`-th
measurement, the negative mass μ(λ < −ε·λmax) by few-vector SLQ (§G.6).

Nets (`NETS`): the zoo's plain and residual post-activation nets (Glorot init; the residual stream grows
through the identity skips, so it starts about 10⁵ times sharper than the plain net), and a
mechanism-keeping residual net (pre-activation branches W·ReLU(s), He init, branches scaled by 1/√L, no
normalization). Each gets learning rates around its own sharpness (`LEARNING_RATES`, chosen from 1-seed
pilot runs before the grid; see RESULTS.md).

Declared before the grid: the primary statistic of a (net, η) is the late eos_ratio, the mean of
eos_ratio over the measurements in the last third of training, one value per seed; its 95% Student-t
interval over seeds decides "at the edge" (interval inside [0.8, 1.25]), "below" (upper end < 0.8),
"above" (lower end > 1.25), otherwise "inconclusive". Secondary, all reported: the fraction of late
measurements within 10% of 2/η, the largest eos_ratio, the first step with eos_ratio ≥ 0.9, the late
gradient share and negative mass, the final training loss, and diverged runs. Added after the first grid
ran (post hoc, so never a verdict): the late *median* eos_ratio, which a few catapult spikes (λmax jumping
to 10-70 × 2/η for one measurement) do not drag the way they drag the mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from landscape import stats
from landscape.data import load_data
from landscape.experiment.summary import fmt
from landscape.hessian.monitor import CurvatureMonitor
from landscape.io import read_jsonl, write_json, write_jsonl
from landscape.models import build

NETS = {"plain": {"kind": "plain"},
        "residual": {"kind": "residual"},
        "residual_preact": {"kind": "residual", "block": "preact", "norm": "none", "init": "he",
                            "branch_scale": "inv_sqrt_depth"}}
LABELS = {"plain": "plain", "residual": "residual (zoo, post-act.)",
          "residual_preact": "residual (pre-act., He, 1/√L)"}
LEARNING_RATES = {"plain": (0.05, 0.1), "residual": (2e-5, 1e-4), "residual_preact": (0.05, 0.1)}
EDGE = (0.8, 1.25)  # the declared band of "at the edge of stability" for the late eos_ratio's interval


@dataclass(frozen=True)
class EosConfig:
    depth: int = 20
    width: int = 128
    n_samples: int = 500
    steps: int = 1000
    every: int = 25
    k: int = 10
    full_every: int = 4
    slq_iters: int = 30
    slq_vectors: int = 2
    seeds: int = 5


def run_one(net: str, lr: float, seed: int, cfg: EosConfig, X: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Full-batch gradient descent on (X, y) with the monitor on the same samples; the monitor's records plus
    a train_loss record at each measured step (the loss before that step's update) and `diverged`."""
    torch.manual_seed(seed)
    model = build("fc", depth=cfg.depth, width=cfg.width, seed=seed, **NETS[net])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = CurvatureMonitor(F.cross_entropy, (X, y), optimizer=opt, every=cfg.every, k=cfg.k, tol=1e-3,
                           metrics=("lambda_max", "grad_top_fraction", "eos_ratio", "negative_ratio"),
                           slq_iters=cfg.slq_iters, slq_vectors=cfg.slq_vectors, full_every=cfg.full_every,
                           seed=seed)
    rows: list[dict] = []
    mon(0, model)
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X), y)
        if not math.isfinite(loss.item()):
            rows.append({"step": step, "block": "model", "metric": "diverged", "value": 1.0})
            break
        if step % cfg.every == 0:
            rows.append({"step": step, "block": "model", "metric": "train_loss", "value": loss.item()})
        loss.backward()
        opt.step()
        mon(step, model)
    return mon.records + rows


def run_path(out: Path, net: str, lr: float, seed: int) -> Path:
    return Path(out) / f"{net}_lr{lr:g}_seed{seed}.jsonl"


def run_eos(out: str | Path, cfg: EosConfig = EosConfig(), lrs: Mapping[str, Sequence[float]] | None = None,
            *, only: str | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Run every missing (net, η, seed) into OUT/<net>_lr<η>_seed<s>.jsonl (atomic; finished runs are kept;
    `only`: just this net, so several processes can share a grid) and write OUT/config.json; returns
    load_eos(out)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lrs = dict(LEARNING_RATES if lrs is None else lrs)
    write_json(out / "config.json", {**asdict(cfg), "nets": {n: NETS[n] for n in lrs}, "learning_rates": lrs})
    data = load_data("mnist1d", "train")
    X, y = data.X[:cfg.n_samples], data.y[:cfg.n_samples]
    for net, rates in lrs.items():
        for lr in rates if only in (None, net) else ():
            for seed in range(cfg.seeds):
                path = run_path(out, net, lr, seed)
                if not path.exists():
                    write_jsonl(path, run_one(net, lr, seed, cfg, X, y))
                    log(str(path))
    return load_eos(out)


def load_eos(out: str | Path) -> dict[tuple[str, float], list[list[dict]]]:
    """(net, η) → one record list per seed, from OUT/config.json's grid (runs not yet finished are left out)."""
    out = Path(out)
    cfg = json.loads((out / "config.json").read_text())
    runs: dict[tuple[str, float], list[list[dict]]] = {}
    for net, rates in cfg["learning_rates"].items():
        for lr in rates:
            for seed in range(cfg["seeds"]):
                path = run_path(out, net, lr, seed)
                if path.exists():
                    runs.setdefault((net, float(lr)), []).append(read_jsonl(path))
    return runs


def _series(recs: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r["value"]) for r in recs if r["metric"] == metric and r["value"] is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = zip(*pts)
    return np.asarray(s, dtype=float), np.asarray(v, dtype=float)


def edge_verdict(interval: stats.Interval) -> str:
    """The declared rule (module docstring) on the late eos_ratio's 95% interval."""
    lo, hi = interval.low, interval.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if EDGE[0] <= lo and hi <= EDGE[1]:
        return "at the edge"
    if hi < EDGE[0]:
        return "below"
    if lo > EDGE[1]:
        return "above"
    return "inconclusive"


def summarize_eos(runs: Mapping[tuple[str, float], Sequence[Sequence[Mapping]]],
                  steps: int | None = None) -> list[dict]:
    """Per (net, η): every statistic of the module docstring, each over seeds with its mean, sample SD,
    95% t interval and n (`landscape.stats.summarize`), and the verdict."""
    rows = []
    for (net, lr), seeds in sorted(runs.items()):
        last = steps or max((r["step"] for recs in seeds for r in recs), default=0)
        late = 2 * last / 3
        per: dict[str, list[float]] = {k: [] for k in ("late_eos_ratio", "late_median_eos_ratio",
                                                     "late_within_10pct", "max_eos_ratio",
                                                     "first_step_at_0.9", "late_grad_top_fraction",
                                                     "late_negative_ratio", "final_train_loss")}
        diverged = 0
        for recs in seeds:
            diverged += any(r["metric"] == "diverged" for r in recs)
            s, e = _series(recs, "eos_ratio")
            tail = e[s > late]
            per["late_eos_ratio"].append(float(tail.mean()) if tail.size else math.nan)
            per["late_median_eos_ratio"].append(float(np.median(tail)) if tail.size else math.nan)
            per["late_within_10pct"].append(float(np.mean(np.abs(tail - 1) <= 0.1 + 1e-12)) if tail.size else math.nan)
            per["max_eos_ratio"].append(float(e.max()) if e.size else math.nan)
            hit = s[e >= 0.9]
            per["first_step_at_0.9"].append(float(hit[0]) if hit.size else math.nan)
            for key, metric in (("late_grad_top_fraction", "grad_top_fraction"),
                                ("late_negative_ratio", "negative_ratio")):
                ms, mv = _series(recs, metric)
                per[key].append(float(mv[ms > late].mean()) if (ms > late).any() else math.nan)
            ls, lv = _series(recs, "train_loss")
            per["final_train_loss"].append(float(lv[-1]) if lv.size else math.nan)
        row = {"net": net, "label": LABELS.get(net, net), "lr": lr, "two_over_lr": 2 / lr, "seeds": len(seeds),
               "diverged": diverged, **{k: stats.summarize(v) for k, v in per.items()}}
        row["verdict"] = edge_verdict(stats.t_ci(per["late_eos_ratio"]))
        rows.append(row)
    return rows


def eos_table(rows: Sequence[Mapping]) -> str:
    """Markdown: one line per (net, η), mean [95% CI] (n) of each statistic."""
    def cell(s: Mapping) -> str:
        if s["n"] == 0 or not math.isfinite(s["mean"]):
            return "—"
        return fmt(s["mean"]) + (f" [{fmt(s['low'])}, {fmt(s['high'])}]" if math.isfinite(s["low"]) else "")

    keys = ("late_eos_ratio", "late_median_eos_ratio", "late_within_10pct", "max_eos_ratio", "first_step_at_0.9",
            "late_grad_top_fraction",
            "late_negative_ratio", "final_train_loss")
    lines = ["| net | η | 2/η | n | " + " | ".join(keys) + " | diverged | verdict |",
             "|" + "---|" * (len(keys) + 6)]
    for r in rows:
        lines.append(f"| {r['label']} | {r['lr']:g} | {r['two_over_lr']:.4g} | {r['seeds']} | "
                     + " | ".join(cell(r[k]) for k in keys) + f" | {r['diverged']} | **{r['verdict']}** |")
    return "\n".join(lines)
