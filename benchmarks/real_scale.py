"""Curvature of the zoo's ResNet-18 at CIFAR size: gradient time, HVP cost per backend, top-1, SLQ.

Problem: `landscape.build("resnetv2", depth=18)` (pre-activation ResNet-18, ImageNet layout with
w = 64, ~11.2M parameters, in eval mode), random CIFAR-size inputs 3×32×32 and labels (seed 0),
mean cross-entropy over `--n-samples` samples in batches of `--batch`. Random data set the cost, not
the spectrum; the numbers measured are times, products and memory. One JSON line per measurement:

- gradient: seconds of one full-data gradient (forward + backward over every batch; median of 3), the unit;
- hvp: per backend (double_backward, func) and k in --ks, seconds per vector of `matmat` with k columns
  over the gradient's (median of 2 after a warm-up pass that also fills the operator's graph cache);
- top1: `top_eigenpairs(op, k=1, tol=1e-3)`: seconds, products, matmat seconds, solver overhead, residual;
- slq: `slq_density(op, iters, vectors)`: seconds, products, peak RSS growth (MiB);
- peers, when importable (skipped otherwise): PyHessian `hessian(...).eigenvalues(top_n=1)` and
  curvlinops `HessianLinearOperator` + scipy `eigsh(k=1, tol=1e-3)`, seconds and products.

    nice -n 10 env PYTHONPATH=. python benchmarks/real_scale.py --n-samples 512 --batch 128
    nice -n 10 env PYTHONPATH=. python benchmarks/real_scale.py --n-samples 16 --batch 8 --iters 4 --vectors 2 --ks 1 2
      (a smoke run of a few minutes on a 2-core CPU; the full problem wants a GPU or an hour)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from torch import nn

import landscape
from landscape.hessian import HessianOperator, slq_density, top_eigenpairs


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def problem(n: int, batch: int, device: torch.device, depth: int = 18, width: int | None = None
            ) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    config = {"depth": depth} | ({"width": width} if width else {})
    model = landscape.build("resnetv2", **config).to(device).eval()
    X = torch.randn(n, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    return model, list(zip(X.split(batch), y.split(batch)))


def gradient_seconds(model: nn.Module, batches: list, device: torch.device, reps: int = 3) -> float:
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(len(b[1]) for b in batches)
    times = []
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        for X, y in batches:
            g = torch.autograd.grad(loss_fn(model(X), y) * (len(y) / n), params)
        _sync(device)
        times.append(time.perf_counter() - t)
        del g
    return statistics.median(times[1:])


def hvp_rows(model, batches, device, ks, tg) -> None:
    for backend in ("double_backward", "func"):
        try:
            op = HessianOperator(model, nn.CrossEntropyLoss(), batches, backend=backend)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run is a row
            emit(what="hvp", backend=backend, error=f"{type(e).__name__}: {str(e)[:200]}")
            continue
        for k in ks:
            V = torch.randn(op.dim, k, device=device)
            op.matmat(V)  # warm-up; fills the graph cache when it fits
            ts = []
            for _ in range(2):
                _sync(device)
                t = time.perf_counter()
                op.matmat(V)
                _sync(device)
                ts.append(time.perf_counter() - t)
            s = statistics.median(ts)
            emit(**op.info(), what="hvp", k=k, seconds=s, per_vector_over_grad=s / k / tg)


def peers(model, batches, device, tg) -> None:
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    try:
        from pyhessian import hessian

        t = time.perf_counter()
        vals, _ = hessian(model, nn.CrossEntropyLoss(), data=(X, y), cuda=device.type == "cuda").eigenvalues(
            top_n=1, tol=1e-3
        )
        emit(what="top1", tool="pyhessian", seconds=time.perf_counter() - t, eigenvalue=float(vals[0]))
    except ImportError:
        emit(what="top1", tool="pyhessian", skipped="not installed")
    except Exception as e:  # noqa: BLE001
        emit(what="top1", tool="pyhessian", error=f"{type(e).__name__}: {str(e)[:200]}")
    try:
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh

        H = HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()), batches)
        t = time.perf_counter()
        vals = eigsh(H, k=1, which="LA", tol=1e-3, return_eigenvectors=False)
        emit(what="top1", tool="curvlinops+eigsh", seconds=time.perf_counter() - t, eigenvalue=float(vals[0]))
    except ImportError:
        emit(what="top1", tool="curvlinops+eigsh", skipped="not installed")
    except Exception as e:  # noqa: BLE001
        emit(what="top1", tool="curvlinops+eigsh", error=f"{type(e).__name__}: {str(e)[:200]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-samples", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--iters", type=int, default=80)
    p.add_argument("--vectors", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--depth", type=int, default=18, help="ResNetV2 depth (default 18; smaller for a dry run)")
    p.add_argument("--width", type=int, default=None, help="first-stage width (default: the depth's own)")
    p.add_argument("--skip", nargs="*", default=[], choices=["hvp", "top1", "slq", "peers"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = landscape.errors.resolve_device(args.device)
    model, batches = problem(args.n_samples, args.batch, device, args.depth, args.width)
    base = {
        "n_samples": args.n_samples,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    emit(what="problem", params=sum(p.numel() for p in model.parameters()), **base)
    tg = gradient_seconds(model, batches, device)
    emit(what="gradient", seconds=tg)
    if "hvp" not in args.skip:
        hvp_rows(model, batches, device, args.ks, tg)
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches)
    if "top1" not in args.skip:
        r = top_eigenpairs(op, k=1, tol=1e-3)
        emit(
            what="top1",
            tool="landscape",
            seconds=r.seconds,
            products=r.n_products,
            matmats=r.matmats,
            matmat_seconds=r.matmat_seconds,
            overhead_fraction=1 - r.matmat_seconds / r.seconds,
            eigenvalue=float(r.eigenvalues[0]),
            residual_rel=float(r.relative_residuals[0]),
            converged=r.converged,
            seconds_over_grad=r.seconds / tg,
        )
    if "slq" not in args.skip:
        before = _peak_mib(device)
        t = time.perf_counter()
        sd = slq_density(op, iters=min(args.iters, op.dim), vectors=args.vectors, top_k=1)
        s = sd.summary()
        emit(
            what="slq",
            iters=args.iters,
            vectors=args.vectors,
            seconds=time.perf_counter() - t,
            seconds_over_grad=(time.perf_counter() - t) / tg,
            peak_mib=_peak_mib(device),
            peak_growth_mib=max(0.0, _peak_mib(device) - before),
            lambda_max=s["lambda_max"],
            lambda_max_stderr=s["lambda_max_stderr"],
            top_products=s.get("top_products"),
            trace=s["trace"],
            trace_stderr=s["trace_stderr"],
        )
    if "peers" not in args.skip:
        peers(model, batches, device, tg)


if __name__ == "__main__":
    main()
