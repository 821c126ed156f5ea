"""HVP cost in gradients, eager and compiled: curvlinops' published ResNet-18 setup, side by side.

curvlinops reports (its documentation's benchmark, ResNet-18, batch 512, an NVIDIA RTX A6000) a
Hessian-vector product costing 7.9 gradients eager and 2.2 with torch.compile. This script measures
the same ratio on the zoo's pre-activation ResNet-18 (`landscape.build("resnetv2", depth=18)`, CIFAR-size
inputs, random data of seed 0, eval mode) for:

- gradient: torch.func.grad of the mean cross-entropy (eager, and torch.compile'd);
- hvp_func: forward-over-reverse jvp(grad) for one vector (eager, compiled);
- hvp_landscape: `HessianOperator(...).matmat` with k = 1 and k = 8 columns (per vector), the engine's
  own backend choice (eager).

One JSON line per measurement: seconds (median of --reps after a warm-up that also compiles), and
ratio = seconds / gradient seconds of the same mode. --width/--depth shrink the problem (the test
suite's dry run uses a tiny CIFAR-style net on the CPU).

    python benchmarks/hvp_vs_gradient.py --device cuda --batch 512          # the published setup
    python benchmarks/hvp_vs_gradient.py --device cpu --batch 4 --depth 8 --width 4 --reps 1 --no-compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

import landscape
from landscape.hessian import HessianOperator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    fn()  # warm-up (and compilation)
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=None, help="first-stage width (default: the depth's own)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    config = {"depth": args.depth} | ({"width": args.width} if args.width else {})
    model = landscape.build("resnetv2", **config).to(device).eval()
    X = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    v = {n: torch.randn_like(t) for n, t in params.items()}
    n_params = sum(t.numel() for t in params.values())

    def loss(ps):
        return F.cross_entropy(functional_call(model, (ps, buffers), (X,)), y)

    def gradient():
        return grad(loss)(params)

    def hvp():
        return jvp(grad(loss), (params,), (v,))[1]

    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "params": n_params, "batch": args.batch, "depth": args.depth}
    modes = [("eager", lambda f: f)] + ([] if args.no_compile else [("compiled", torch.compile)])
    for mode, wrap in modes:
        g = timed(wrap(gradient), device, args.reps)
        print(json.dumps({**info, "measure": "gradient", "mode": mode, "seconds": g, "ratio": 1.0}), flush=True)
        h = timed(wrap(hvp), device, args.reps)
        print(json.dumps({**info, "measure": "hvp_func", "mode": mode, "seconds": h, "ratio": h / g}), flush=True)
        if mode == "eager":
            op = HessianOperator(model, F.cross_entropy, (X, y))
            for k in (1, 8):
                V = torch.randn(op.dim, k, device=device, dtype=op.dtype)
                s = timed(lambda V=V, op=op: op.matmat(V), device, args.reps) / k
                print(json.dumps({**info, "measure": "hvp_landscape", "mode": mode, "k": k, "seconds": s,
                                  "ratio": s / g, "backend": op.info().get("backend")}), flush=True)
    print(json.dumps({**info, "measure": "published", "source": "curvlinops docs, ResNet-18, batch 512, RTX A6000",
                      "hvp_ratio_eager": 7.9, "hvp_ratio_compiled": 2.2}), flush=True)


if __name__ == "__main__":
    main()
