"""Edge of stability on the FC zoo: does λmax rise to 2/η and stay there, in plain and residual nets?

    nice -n 10 python experiments/edge_of_stability.py --out runs/eos            # 2 nets × 2 lr × 3 seeds
    python experiments/edge_of_stability.py --out runs/eos --plot-only          # redraw from runs/eos/*.jsonl

Trains the 20 × 128 plain and residual FC nets (`landscape.build("fc", ...)`) on MNIST-1D with plain SGD
(no momentum; minibatch --batch) at two learning rates per net, for --seeds seeds, and measures with
`CurvatureMonitor` every --every steps on the first --probe-samples training samples: λmax with
eos_ratio = λmax·η/2 (docs/methods.md §G.4), the gradient's share of the top-k eigenspace (§G.3, k =
the 10 classes) and the negative mass (§G.6). The residual net starts roughly 10⁴ times sharper than the plain
one (its stream grows through 20 identity skips), so each net gets learning rates around its own 2/λmax at
initialization (--lr-plain, --lr-residual).

Writes OUT/<net>_lr<η>_seed<s>.jsonl (the monitor's records plus the training loss), OUT/summary.json
(per run: the mean and SD over seeds of eos_ratio over the last third of training, and the fraction of
measurements with eos_ratio in [0.9, 1.1]) and figures/eos_*.png: λmax against 2/η, the gradient share
and the negative mass over training, one panel per net and learning rate, every seed drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.data import load_data
from landscape.hessian.monitor import CurvatureMonitor
from landscape.io import read_jsonl, write_json, write_jsonl
from landscape.models import build


def run_one(net: str, lr: float, seed: int, args, data) -> list[dict]:
    torch.manual_seed(seed)
    model = build("fc", kind=net, depth=20, width=128)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    probe = (data.X[:args.probe_samples], data.y[:args.probe_samples])
    mon = CurvatureMonitor(F.cross_entropy, probe, optimizer=opt, every=args.every, k=10, tol=1e-3,
                           metrics=("lambda_max", "grad_top_fraction", "eos_ratio", "negative_ratio"),
                           slq_iters=30, slq_vectors=2, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    rows, step = [], 0
    while step < args.steps:
        perm = torch.randperm(len(data.y), generator=gen)
        for s in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[s:s + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.X[idx]), data.y[idx])
            loss.backward()
            opt.step()
            step += 1
            if not math.isfinite(float(loss.detach())):
                rows.append({"step": step, "block": "model", "metric": "diverged", "value": 1.0})
                return mon.records + rows
            if step % args.every == 0:
                rows.append({"step": step, "block": "model", "metric": "train_loss", "value": float(loss.detach())})
            mon(step, model)
            if step >= args.steps:
                break
    return mon.records + rows


def summarize(runs: dict[tuple[str, float], list[list[dict]]], steps: int) -> list[dict]:
    out = []
    for (net, lr), seeds in sorted(runs.items()):
        late, near = [], []
        for recs in seeds:
            eos = [r["value"] for r in recs if r["metric"] == "eos_ratio" and r["step"] > 2 * steps / 3]
            late.append(float(np.mean(eos)) if eos else math.nan)
            near.append(float(np.mean([0.9 <= v <= 1.1 for v in eos])) if eos else math.nan)
        out.append({"net": net, "lr": lr, "two_over_lr": 2 / lr, "seeds": len(seeds),
                    "late_eos_ratio_mean": float(np.mean(late)),
                    "late_eos_ratio_sd": float(np.std(late, ddof=1)) if len(late) > 1 else math.nan,
                    "late_fraction_within_10pct": float(np.mean(near)),
                    "diverged": sum(any(r["metric"] == "diverged" for r in recs) for recs in seeds)})
    return out


def plot(runs: dict, figures: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(runs)
    fig, axes = plt.subplots(3, len(keys), figsize=(3.2 * len(keys), 7.5), squeeze=False)
    for j, (net, lr) in enumerate(keys):
        for recs in runs[(net, lr)]:
            for i, metric in enumerate(("lambda_max", "grad_top_fraction", "negative_ratio")):
                pts = [(r["step"], r["value"]) for r in recs if r["metric"] == metric and r["value"] is not None]
                if pts:
                    axes[i, j].plot(*zip(*pts), lw=1, alpha=0.8)
        axes[0, j].axhline(2 / lr, color="k", ls="--", lw=1, label="2/η")
        axes[0, j].set_title(f"{net}, η = {lr:g}")
        axes[0, j].legend(fontsize=7)
        axes[2, j].set_xlabel("step")
    for i, name in enumerate(("λmax", "grad share of top-10", "negative mass")):
        axes[i, 0].set_ylabel(name)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(figures / "eos_fc_mnist1d.png", dpi=120)
    fig.savefig(figures / "eos_fc_mnist1d.pdf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/eos")
    ap.add_argument("--figures", default="figures")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--probe-samples", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr-plain", type=float, nargs=2, default=[0.5, 1.0])
    ap.add_argument("--lr-residual", type=float, nargs=2, default=[1e-4, 2e-4])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = None if args.plot_only else load_data("mnist1d", "train")
    runs: dict[tuple[str, float], list[list[dict]]] = {}
    for net, lrs in (("plain", args.lr_plain), ("residual", args.lr_residual)):
        for lr in lrs:
            for seed in range(args.seeds):
                path = out / f"{net}_lr{lr:g}_seed{seed}.jsonl"
                if not path.exists():
                    if args.plot_only:
                        continue
                    write_jsonl(path, run_one(net, lr, seed, args, data))
                    print(f"{path}", file=sys.stderr, flush=True)
                runs.setdefault((net, lr), []).append(read_jsonl(path))
    summary = summarize(runs, args.steps)
    write_json(out / "summary.json", summary)
    for row in summary:
        print(json.dumps(row))
    plot(runs, Path(args.figures))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
