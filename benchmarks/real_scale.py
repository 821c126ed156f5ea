"""Curvature of the zoo's ResNet-18 at CIFAR size, side by side with the peers: gradient, HVP, top-1, SLQ.

Problem: `landscape.build("resnetv2", depth=18)` (pre-activation ResNet-18, ImageNet layout with
w = 64, ~11.2M parameters, in eval mode), random CIFAR-size inputs 3×32×32 and labels (seed 0),
mean cross-entropy over `--n-samples` samples in batches of `--batch`. Random data set the cost, not
the spectrum; the numbers measured are times, products and memory. One JSON line per measurement:

- gradient: seconds of one full-data gradient (forward + backward over every batch; median of 3), the unit;
- hvp: per backend (double_backward, func) and k in --ks, seconds per vector of `matmat` with k columns
  over the gradient's (median of --hvp-reps after a warm-up pass that also fills the graph cache);
- top1, tool=landscape: `HessianOperator` (default backend "auto") + `top_eigenpairs(op, k=1, tol=1e-3)`:
  construction and solve seconds, products, solver overhead (wall − time in matmat), relative residual;
- top1, tool=pyhessian (peer): `hessian(model, criterion, dataloader=batches).eigenvalues(top_n=1)`, power
  iteration. Each of its products is wrapped to read the residual ‖Hv − λv‖/|λ| of the iterate from the
  product it already made (no extra product; the wrapper's own seconds are subtracted). Two stopping
  points from one run: its own default (relative change of λ < 1e-3) and equal accuracy (residual ≤ 1e-3);
- top1, tool=curvlinops+eigsh (peer): `HessianLinearOperator(..., check_deterministic=False).to_scipy()` +
  `scipy.sparse.linalg.eigsh(k=1, which="LA", tol=1e-3)`, products counted; residual checked afterwards;
- slq: landscape `slq_density(op, iters, vectors)` against PyHessian `density(iter, n_v)` (loader mode,
  same iters × vectors) at each of --slq-threads, each tool in a fresh child process so that its peak RSS
  (VmHWM, from after the problem is built) is its own; `--repeat` rounds with the tools interleaved, then a
  median row per (tool, threads). Each row has wall and CPU seconds (user + system of the child: at one
  thread nearly immune to other processes' load) and the load average when the child started and ended.
  `--landscape-chains N` adds a landscape row whose Lanczos bases are capped at N chains at a time
  (`slq_density(max_basis_bytes=...)`), `--compare-root DIR` one from another checkout of landscape (the
  code before a change); landscape rows report the operator's backend and `backend_choice`.

PyHessian 0.1 calls `torch.eig`, removed in torch 1.9: it is shimmed with `torch.linalg.eigh` (the tridiagonal
is symmetric). Peers missing from the environment give a `skipped` row.

    nice -n 5 env PYTHONPATH=. python benchmarks/real_scale.py --n-samples 512 --batch 128   # the GPU size
    nice -n 5 env PYTHONPATH=. python benchmarks/real_scale.py --n-samples 32 --batch 16 --iters 10 --vectors 2 \
        --hvp-reps 1 --max-products 60 --threads 1 --slq-threads 1 2      # 2-core CPU size (25 min, BENCHMARKS.md)
    nice -n 5 env PYTHONPATH=. python benchmarks/real_scale.py --n-samples 32 --batch 16 --iters 10 --vectors 2 \
        --threads 1 --slq-threads 1 2 --skip hvp top1 --repeat 3 --landscape-chains 1   # SLQ side by side, medians
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import landscape
from landscape.hessian import HessianOperator, slq_density, top_eigenpairs

TOL = 1e-3


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    """Peak memory in MiB: CUDA's allocator high-water mark, else this process's own VmHWM (getrusage's
    ru_maxrss would carry a parent's high-water mark into a child across fork and exec)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _shim_torch_eig() -> None:
    def eig(T, eigenvectors=False):  # PyHessian 0.1's torch.eig on its symmetric tridiagonal
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    torch.eig = eig


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


def hvp_rows(model, batches, device, ks, tg, reps: int = 2) -> None:
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
            for _ in range(reps):
                _sync(device)
                t = time.perf_counter()
                op.matmat(V)
                _sync(device)
                ts.append(time.perf_counter() - t)
            s = statistics.median(ts)
            emit(**op.info(), what="hvp", k=k, seconds=s, per_vector_over_grad=s / k / tg, reps=reps)
        del op


def landscape_top1(model, batches, tg) -> None:
    t = time.perf_counter()
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches)
    built = time.perf_counter() - t
    build_products = op.n_products
    r = top_eigenpairs(op, k=1, tol=TOL)
    emit(
        what="top1",
        tool="landscape",
        backend=op.info().get("backend"),
        build_seconds=built,
        build_products=build_products,
        solve_seconds=r.seconds,
        seconds=built + r.seconds,
        products=r.n_products,
        matmats=r.matmats,
        matmat_seconds=r.matmat_seconds,
        overhead_fraction=1 - r.matmat_seconds / r.seconds,
        eigenvalue=float(r.eigenvalues[0]),
        residual_rel=float(r.relative_residuals[0]),
        converged=r.converged,
        seconds_over_grad=(built + r.seconds) / tg,
    )


class _Enough(Exception):
    pass


def pyhessian_top1(model, batches, device, tg, max_products: int) -> None:
    """PyHessian's power iteration, traced product by product (see the module docstring)."""
    from pyhessian import hessian

    _shim_torch_eig()
    torch.manual_seed(1)
    t0 = time.perf_counter()
    h = hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=device.type == "cuda")
    product = h.dataloader_hv_product
    trace: list[dict] = []
    marks: dict = {}
    own = [0.0]

    def traced(v):
        lam, Hv = product(v)
        t = time.perf_counter()
        with torch.no_grad():
            vv = sum(float((x * x).sum()) for x in v)
            rq = lam / vv
            r = math.sqrt(sum(float(((a - rq * x) ** 2).sum()) for a, x in zip(Hv, v)) / vv)
        prev = trace[-1]["eigenvalue"] if trace else None
        trace.append({"eigenvalue": lam, "residual_rel": r / abs(rq), "products": len(trace) + 1,
                      "seconds": t - t0 - own[0]})
        own[0] += time.perf_counter() - t
        default_stop = prev is not None and abs(prev - lam) / (abs(prev) + 1e-6) < TOL
        if default_stop and "default" not in marks:
            marks["default"] = trace[-1]
        if r <= TOL * abs(rq) and "equal" not in marks:
            marks["equal"] = trace[-1]
        if len(marks) == 2:
            raise _Enough
        return lam, Hv

    h.dataloader_hv_product = traced
    try:
        h.eigenvalues(maxIter=max_products, tol=0.0, top_n=1)  # tol 0: stop only through the trace
    except _Enough:
        pass
    last = trace[-1]
    for stop in ("default", "equal"):
        row = marks.get(stop)
        emit(what="top1", tool="pyhessian", stop=stop, reached=row is not None, max_products=max_products,
             **(row or last), seconds_over_grad=(row or last)["seconds"] / tg)


def curvlinops_top1(model, batches, tg) -> None:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh

    t0 = time.perf_counter()
    H = HessianLinearOperator(model, nn.CrossEntropyLoss(), [p for p in model.parameters() if p.requires_grad],
                              batches, check_deterministic=False)
    Hs = H.to_scipy()
    count = [0]

    def mv(x):
        count[0] += 1
        return Hs @ x

    A = LinearOperator(Hs.shape, matvec=mv, dtype=Hs.dtype)
    vals, vecs = eigsh(A, k=1, which="LA", tol=TOL, v0=np.random.default_rng(1).standard_normal(Hs.shape[0]))
    seconds = time.perf_counter() - t0
    lam, v = float(vals[0]), vecs[:, 0] / np.linalg.norm(vecs[:, 0])
    r = float(np.linalg.norm(Hs @ v - lam * v)) / abs(lam)  # one more product, outside the timing
    emit(what="top1", tool="curvlinops+eigsh", seconds=seconds, products=count[0], eigenvalue=lam,
         residual_rel=r, seconds_over_grad=seconds / tg)


def peers_top1(model, batches, device, tg, max_products: int) -> None:
    for tool, run in (("pyhessian", lambda: pyhessian_top1(model, batches, device, tg, max_products)),
                      ("curvlinops+eigsh", lambda: curvlinops_top1(model, batches, tg))):
        try:
            run()
        except ImportError:
            emit(what="top1", tool=tool, skipped="not installed")
        except Exception as e:  # noqa: BLE001 - a peer that fails is a row
            emit(what="top1", tool=tool, error=f"{type(e).__name__}: {str(e)[:200]}")


def slq_child(args, device) -> dict:
    """One SLQ run (args.child: landscape | pyhessian) in this fresh process; peak RSS from after the build."""
    model, batches = problem(args.n_samples, args.batch, device, args.depth, args.width)
    before = _peak_mib(device)
    load = os.getloadavg()[0]
    t, cpu = time.perf_counter(), _cpu_seconds()
    if args.child == "landscape":
        op = HessianOperator(model, nn.CrossEntropyLoss(), batches)
        built = time.perf_counter() - t
        iters = min(args.iters, op.dim)
        kw = {"max_basis_bytes": args.chains * (iters + 1) * op.dim * 4} if args.chains else {}
        sd = slq_density(op, iters=iters, vectors=args.vectors, **kw)
        s = sd.summary()
        extra = {"build_seconds": built, "products": op.n_products, "backend": op.info().get("backend"),
                 "backend_choice": op.info().get("backend_choice"), "chains": sd.meta.get("chains_per_group"),
                 "lambda_max": s["lambda_max"], "trace": s["trace"], "trace_stderr": s["trace_stderr"]}
    else:
        from pyhessian import hessian

        _shim_torch_eig()
        torch.manual_seed(1)
        nodes, _ = hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=device.type == "cuda").density(
            iter=args.iters, n_v=args.vectors)
        extra = {"products": args.iters * args.vectors, "lambda_max": float(max(max(e) for e in nodes))}
    seconds, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    peak = _peak_mib(device)
    tool = args.label or args.child + (f"-{args.chains}chain" if args.chains else "")
    return {"what": "slq", "tool": tool, "threads": torch.get_num_threads(), "iters": args.iters,
            "vectors": args.vectors, "seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak,
            "peak_growth_mib": max(0.0, peak - before), "load_start": load, "load_end": os.getloadavg()[0], **extra}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def slq_rows(args, tg: float) -> None:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    tools = [("landscape", 0, root)] + ([("landscape", args.landscape_chains, root)] if args.landscape_chains else [])
    tools += [("landscape", 0, args.compare_root)] if args.compare_root else []
    tools += [] if "peers" in args.skip else [("pyhessian", 0, root)]
    rows: dict = {}
    for _ in range(args.repeat):
        for threads in args.slq_threads:
            for tool, chains, code in tools:
                cmd = [sys.executable, __file__, "--child", tool, "--threads", str(threads), "--device", args.device,
                       "--n-samples", str(args.n_samples), "--batch", str(args.batch), "--depth", str(args.depth),
                       "--iters", str(args.iters), "--vectors", str(args.vectors), "--chains", str(chains)]
                cmd += ["--width", str(args.width)] if args.width else []
                cmd += ["--label", "landscape@compare"] if code != root else []
                out = subprocess.run(cmd, capture_output=True, text=True,
                                     env={**env, "PYTHONPATH": os.pathsep.join([code, env["PYTHONPATH"]])})
                lines = out.stdout.strip().splitlines()
                if out.returncode != 0 or not lines:
                    err = (out.stderr.strip().splitlines() or ["?"])[-1][:300]
                    emit(what="slq", tool=tool, threads=threads, error=err)
                    continue
                row = json.loads(lines[-1])
                emit(**row, seconds_over_grad=row["seconds"] / tg)
                rows.setdefault((row["tool"], threads), []).append(row)
    if args.repeat > 1:
        for (tool, threads), runs in rows.items():
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ("seconds", "cpu_seconds", "peak_growth_mib", "load_start", "load_end")}
            emit(what="slq-median", tool=tool, threads=threads, iters=args.iters, vectors=args.vectors,
                 runs=len(runs), **med, seconds_runs=[r["seconds"] for r in runs],
                 peak_growth_runs=[r["peak_growth_mib"] for r in runs])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-samples", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--hvp-reps", type=int, default=2, help="timed matmat calls per (backend, k) after a warm-up")
    p.add_argument("--iters", type=int, default=80)
    p.add_argument("--vectors", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--slq-threads", type=int, nargs="+", default=[0],
                   help="thread counts of the SLQ rows, one child process per tool each (0: torch's default)")
    p.add_argument("--max-products", type=int, default=100, help="cap on PyHessian's power iterations")
    p.add_argument("--device", default="auto")
    p.add_argument("--depth", type=int, default=18, help="ResNetV2 depth (default 18; smaller for a dry run)")
    p.add_argument("--width", type=int, default=None, help="first-stage width (default: the depth's own)")
    p.add_argument("--skip", nargs="*", default=[], choices=["hvp", "top1", "slq", "peers"])
    p.add_argument("--repeat", type=int, default=1, help="rounds of the SLQ rows (tools interleaved); median rows")
    p.add_argument("--landscape-chains", type=int, default=0,
                   help="also run landscape's SLQ with its bases capped at this many chains at a time")
    p.add_argument("--child", choices=["landscape", "pyhessian"], help=argparse.SUPPRESS)
    p.add_argument("--compare-root", default=None,
                   help="also run landscape's SLQ from the checkout at this directory (e.g. the code before a change)")
    p.add_argument("--chains", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--label", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = landscape.errors.resolve_device(args.device)
    if args.child:
        emit(**slq_child(args, device))
        return
    model, batches = problem(args.n_samples, args.batch, device, args.depth, args.width)
    base = {
        "n_samples": args.n_samples,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg": os.getloadavg()[0],
    }
    emit(what="problem", params=sum(p.numel() for p in model.parameters()), **base)
    tg = gradient_seconds(model, batches, device)
    emit(what="gradient", seconds=tg)
    if "hvp" not in args.skip:
        hvp_rows(model, batches, device, args.ks, tg, args.hvp_reps)
    if "top1" not in args.skip:
        landscape_top1(model, batches, tg)
        if "peers" not in args.skip:
            peers_top1(model, batches, device, tg, args.max_products)
    if "slq" not in args.skip:
        slq_rows(args, tg)
    emit(what="done", load_avg=os.getloadavg()[0])


if __name__ == "__main__":
    main()
