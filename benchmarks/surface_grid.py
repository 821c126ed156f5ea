"""Loss-surface grid: `landscape.surface.evaluate_grid` against the per-point loop of the reference code.

    nice -n 10 python benchmarks/surface_grid.py                      # FC 20 × 128, 51 × 51, 1,000 samples
    nice -n 10 python benchmarks/surface_grid.py --task resnet --block 8 --rounds 2   # CIFAR ResNetV2-20

Methods:
- `reference`: what loss-landscape's `crunch` does per grid point: write θ₀ + x·d₀ + y·d₁ into the model
  parameter by parameter (`p.data = w + change`), then `eval_loss` over a DataLoader (TensorDataset,
  batch 128, no shuffle) with `loss.item()·batch` and `correct.item()` per batch.
- `loop`: the same per point, but the weights copied in place and all samples in one forward.
- `landscape`: `evaluate_grid` with its default backend; `landscape-vmap` / `landscape-loop` force one.

The machine is shared, so the methods are timed interleaved in one process: `--rounds` rounds (after one
warm-up round), each running every method on the same `--block` grid points; the median seconds per point
is extrapolated to the whole grid (every point costs the same). Peak RSS: each method alone in a fresh
process on one block (VmHWM). Prints one JSON line per method with the load average.
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
METHODS = ("reference", "loop", "landscape", "landscape-vmap", "landscape-loop")


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


def _setup(args: argparse.Namespace):
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from landscape.surface import mesh_coords, random_directions

    torch.set_num_threads(args.threads)
    model, X, y = _problem(args.task, args.n_samples)
    dirs = random_directions(model, 2, seed=0)
    xs = np.linspace(-1, 1, args.n)
    coords = mesh_coords(xs, xs)
    return model, X, y, dirs, (coords[:args.points] if args.task == "resnet" else coords)


def _runner(method: str, model, X, y, dirs):
    """A function evaluating the given grid points with `method` (returns evaluate_grid's info or {})."""
    import torch
    import torch.nn.functional as F

    from landscape.surface import evaluate_grid

    if method.startswith("landscape"):
        backend = method.partition("-")[2] or "auto"
        return lambda pts: evaluate_grid(model, F.cross_entropy, (X, y), dirs, pts, backend=backend).info
    weights = [p.detach().clone() for p in model.parameters()]
    d0, d1 = list(dirs[0].values()), list(dirs[1].values())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=128, shuffle=False)

    def run(pts):
        for cx, cy in pts:
            if method == "reference":
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
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights):
                p.copy_(w)
        return {}
    return run


def _one(args: argparse.Namespace) -> None:
    """Child process: one method on `--block` points, for its peak RSS."""
    model, X, y, dirs, coords = _setup(args)
    info = _runner(args.method, model, X, y, dirs)(coords[:args.block])
    print(json.dumps({"method": args.method, "peak_rss_mib": round(_peak_rss_mib(), 1), **info}), flush=True)


def _interleaved(args: argparse.Namespace) -> list[dict]:
    """Rounds of every method in turn on the same points (the first round is warm-up); median s/point."""
    import statistics

    model, X, y, dirs, coords = _setup(args)
    runners = {m: _runner(m, model, X, y, dirs) for m in args.methods}
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    infos = {}
    for r in range(args.rounds + 1):
        pts = coords[(r * args.block) % len(coords):][:args.block]
        for m in args.methods:
            t0 = time.perf_counter()
            infos[m] = runners[m](pts)
            if r:
                times[m].append((time.perf_counter() - t0) / len(pts))
    rows = []
    for m in args.methods:
        per = statistics.median(times[m])
        rows.append({"task": args.task, "method": m, "grid_points": len(coords), "timed_points":
                     args.block * args.rounds, "seconds_full_grid": round(per * len(coords), 2),
                     "points_per_s": round(1 / per, 2), "threads": args.threads, "n_samples": len(y),
                     "n_params": sum(p.numel() for p in model.parameters()), **infos[m]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("fc", "resnet"), default="fc")
    p.add_argument("--n", type=int, default=51, help="grid points per axis (default 51)")
    p.add_argument("--points", type=int, default=16, help="resnet: grid points in the problem (default 16)")
    p.add_argument("--n-samples", type=int, default=None, help="samples (default fc 1,000, resnet 256)")
    p.add_argument("--block", type=int, default=64, help="points per method per round (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--one", dest="method", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.n_samples = args.n_samples or (1000 if args.task == "fc" else 256)
    if args.method:
        _one(args)
        return
    rows = _interleaved(args)
    for r in rows:  # peak memory: each method alone in a fresh process on one block
        cmd = [sys.executable, __file__, "--one", r["method"], "--task", args.task, "--n", str(args.n), "--points",
               str(args.points), "--n-samples", str(args.n_samples), "--block", str(args.block),
               "--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if res.returncode:
            sys.exit(f"{r['method']} failed:\n{res.stderr[-2000:]}")
        r["peak_rss_mib"] = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    ref = next((r for r in rows if r["method"] == "reference"), None)
    for r in rows:
        if ref:
            r["speedup_vs_reference"] = round(ref["seconds_full_grid"] / r["seconds_full_grid"], 2)
        r["loadavg"] = round(os.getloadavg()[0], 2)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
