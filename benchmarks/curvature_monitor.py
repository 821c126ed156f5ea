"""Cost of the curvature monitor during training, and what warm starts save.

    nice -n 10 python benchmarks/curvature_monitor.py --threads 1            # FC 20 × 128, MNIST-1D, K = 50

Trains the zoo's 20 × 128 residual FC net on MNIST-1D (batch 128, Adam lr 1e-3 as the zoo) for
`--steps` steps and calls `CurvatureMonitor` every `--every` steps on the first `--samples`
training samples. Targets (issue 13): after the first measurement a warm-started solve reaches the
same residual in at most 1/3 of the products of a cold (random) start, and the whole monitor costs at
most 10% of the training time at K = 50.

Reported per measurement: products of the warm solve (the monitor's own) and of a cold solve to the
same tolerance on the same operator (run outside the timed region, only for the comparison), λmax
and its relative residual. The summary line gives the training seconds (optimizer steps only, no
evaluation: the strictest denominator), the monitor's seconds and their ratio. One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.data import load_data
from landscape.hessian import HessianOperator
from landscape.hessian.monitor import CurvatureMonitor, MonitorOptions
from landscape.hessian.solvers.eigen import top_eigenpairs
from landscape.models import build
from landscape.modes import preserved_modes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="residual", help="FC kind: residual or plain")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--samples", type=int, default=128, help="the measurement set: the first N training samples")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--metrics", default="lambda_max,top_eigenvalues,grad_top_fraction,eos_ratio")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start comparison solves")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_data("mnist1d", "train")
    model = build("fc", kind=args.kind, depth=20, width=128)
    opt = (torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum) if args.optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=args.lr))
    samples = (data.X[:args.samples], data.y[:args.samples])
    monitor = CurvatureMonitor(F.cross_entropy, samples, optimizer=opt, every=args.every,
                               options=MonitorOptions(k=args.k, tol=args.tol, metrics=args.metrics.split(",")))
    gen = torch.Generator().manual_seed(args.seed)
    train_s = 0.0
    step = 0
    rows = []
    while step < args.steps:
        perm = torch.randperm(len(data.y), generator=gen)
        for s in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[s:s + args.batch]
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.X[idx]), data.y[idx])
            loss.backward()
            opt.step()
            train_s += time.perf_counter() - t
            step += 1
            n_before = len(monitor.history)
            monitor(step, model, (data.X[idx], data.y[idx]), loss.detach())
            if len(monitor.history) > n_before:
                h = monitor.history[-1]
                row = {"bench": "curvature_measurement", "step": step, "seconds": round(h["seconds"], 4),
                       "warm_products": h.get("products"), "total_products": h["total_products"],
                       "lambda_max": next(r["value"] for r in monitor.records[::-1] if r["metric"] == "lambda_max"),
                       "relative_residual": h.get("relative_residual")}
                if not args.no_cold:
                    with preserved_modes(model, train=False):
                        op = HessianOperator(model, F.cross_entropy, samples, backend="double_backward", cache=True)
                        cold = top_eigenpairs(op, args.k, tol=args.tol, max_matmats=200, seed=step)
                    row["cold_products"] = cold.n_products
                    row["cold_lambda_max"] = float(cold.eigenvalues[0])
                rows.append(row)
                print(json.dumps(row), flush=True)
            if step >= args.steps:
                break
    monitor_s = sum(h["seconds"] for h in monitor.history)
    later = [r for r in rows[1:] if r.get("cold_products")]
    ratio = statistics.median(r["warm_products"] / r["cold_products"] for r in later) if later else None
    print(json.dumps({"bench": "curvature_monitor", "kind": args.kind, "steps": step, "every": args.every,
                      "samples": args.samples, "k": args.k, "tol": args.tol, "metrics": args.metrics,
                      "optimizer": args.optimizer, "lr": args.lr, "threads": torch.get_num_threads(),
                      "train_s": round(train_s, 3), "step_ms": round(1e3 * train_s / step, 3),
                      "monitor_s": round(monitor_s, 3), "overhead": round(monitor_s / train_s, 4),
                      "median_warm_over_cold_products": ratio}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
