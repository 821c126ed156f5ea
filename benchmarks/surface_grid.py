"""Loss-surface grid: `landscape.surface.evaluate_grid` against the per-point loop of the reference code.

    nice -n 10 python benchmarks/surface_grid.py                      # FC 20 × 128, 51 × 51, 1,000 samples
    python benchmarks/surface_grid.py --task resnet --points 8        # CIFAR ResNetV2-20, 256 random images
    python benchmarks/surface_grid.py --loop-points 100 --grid-points 400 --threads 1

Methods, each in a fresh subprocess (peak RSS = its VmHWM):
- `reference`: what loss-landscape's `crunch` does per grid point: write θ₀ + x·d₀ + y·d₁ into the model
  parameter by parameter (`p.data = w + change`), then `eval_loss` over a DataLoader (TensorDataset,
  batch 128, no shuffle) with `loss.item()·batch` and `correct.item()` per batch.
- `loop`: the same per point, but the weights copied in place and all samples in one forward.
- `landscape`: `evaluate_grid` (vmap over stacked parameter sets for the FC net, auto backend).

The loop methods time the first `--loop-points` grid points and extrapolate linearly to the whole grid
(each point costs the same); `landscape` times `--grid-points` points the same way (0: all). Prints one
JSON line per method with seconds for the full grid, points/s, speed-up vs `reference`, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("reference", "loop", "landscape")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _problem(task: str, n_samples: int):
    import torch

    from landscape.data import load_data
    from landscape.models import build

    if task == "fc":
        model = build("fc", kind="residual", depth=20, width=128).eval()
        data = load_data("mnist1d", n_samples=max(n_samples, 1000))
        X, y = data.X[:n_samples], data.y[:n_samples]
    else:
        model = build("resnetv2", depth=20, style="cifar").eval()
        g = torch.Generator().manual_seed(0)
        X, y = torch.randn(n_samples, 3, 32, 32, generator=g), torch.randint(0, 10, (n_samples,), generator=g)
    return model, X, y


def _one(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    import torch.nn.functional as F

    from landscape.surface import evaluate_grid, mesh_coords, random_directions

    torch.set_num_threads(args.threads)
    model, X, y = _problem(args.task, args.n_samples)
    dirs = random_directions(model, 2, seed=0)
    xs = np.linspace(-1, 1, args.n)
    coords = mesh_coords(xs, xs)
    if args.task == "resnet":
        coords = coords[:args.points]
    total = len(coords)
    limit = args.loop_points if args.method != "landscape" else (args.grid_points or total)
    sub = coords[:min(limit, total)]
    t0 = time.perf_counter()
    if args.method == "landscape":
        vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, sub)
        info = vals.info
    else:
        weights = [p.detach().clone() for p in model.parameters()]
        d0 = [d.clone() for d in dirs[0].values()]
        d1 = [d.clone() for d in dirs[1].values()]
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=128, shuffle=False)
        info = {}
        for cx, cy in sub:
            if args.method == "reference":
                for p, w, a, b in zip(model.parameters(), weights, d0, d1):
                    p.data = w + (a * float(cx) + b * float(cy)).type(type(w))
                total_loss, correct, n = 0.0, 0, 0
                with torch.no_grad():
                    for inputs, targets in loader:
                        outputs = model(inputs)
                        total_loss += F.cross_entropy(outputs, targets).item() * inputs.size(0)
                        correct += outputs.max(1)[1].eq(targets).sum().item()
                        n += inputs.size(0)
            else:
                with torch.no_grad():
                    for p, w, a, b in zip(model.parameters(), weights, d0, d1):
                        p.copy_(w + float(cx) * a + float(cy) * b)
                    out = model(X)
                    F.cross_entropy(out, y).item()
                    (out.argmax(1) == y).sum().item()
    seconds = (time.perf_counter() - t0) * total / len(sub)
    print(json.dumps({"task": args.task, "method": args.method, "grid_points": total, "timed_points": len(sub),
                      "seconds_full_grid": round(seconds, 2), "points_per_s": round(total / seconds, 2),
                      "threads": args.threads, "n_samples": len(y), "peak_rss_mib": round(_peak_rss_mib(), 1),
                      "n_params": sum(p.numel() for p in model.parameters()), **info}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("fc", "resnet"), default="fc")
    p.add_argument("--n", type=int, default=51, help="grid points per axis (default 51)")
    p.add_argument("--points", type=int, default=8, help="resnet: grid points evaluated (default 8)")
    p.add_argument("--n-samples", type=int, default=None, help="samples (default fc 1,000, resnet 256)")
    p.add_argument("--loop-points", type=int, default=60, help="points timed for the loop methods (default 60)")
    p.add_argument("--grid-points", type=int, default=0, help="points timed for landscape (default 0: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--one", dest="method", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.n_samples = args.n_samples or (1000 if args.task == "fc" else 256)
    if args.method:
        _one(args)
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--one", method, "--task", args.task, "--n", str(args.n), "--points",
               str(args.points), "--n-samples", str(args.n_samples), "--loop-points", str(args.loop_points),
               "--grid-points", str(args.grid_points), "--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if res.returncode:
            sys.exit(f"{method} failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = next((r for r in rows if r["method"] == "reference"), None)
    for r in rows:
        if ref:
            r["speedup_vs_reference"] = round(ref["seconds_full_grid"] / r["seconds_full_grid"], 2)
        r["loadavg"] = os.getloadavg()[0]
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
