"""Solver memory against its formula, and the memory-bounded Lanczos against full reorthogonalization.

Memory rows: one solver run per fresh subprocess on a float32 diagonal operator (five outliers 130..90 over an
N(0, 0.01²) bulk; a product costs nothing), `peak_extra_bytes` = VmHWM after − VmHWM before the call (the
operator's diagonal and the interpreter excluded), next to the formula of the solver's docstring
(`formula_bytes`) and, for scipy's eigsh (ARPACK, float32 operator), its Lanczos basis ncv·P.

Accuracy rows (`--accuracy`): SLQ with full, selective and no reorthogonalization on exact float64 Hessians of the
tiny test networks (tests/hessian/tiny.py; 5 seeds × 8 vectors × 30 steps) and on the 10⁵-dim diagonal operator in
float64 and float32 (100 steps × 4 vectors): median W1 distance of the density to the exact spectrum, largest
relative difference of the top-2 nodes from full's, products spent replaying.

    nice -n 10 env PYTHONPATH=. python benchmarks/lanczos_memory.py [--dims 1e6 1e7] [--accuracy]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time, numpy as np, torch
torch.set_num_threads(1)
from landscape.hessian import as_operator, slq_density, top_eigenpairs

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

kind, dim, iters, vectors, k, budget = sys.argv[1], *(int(a) for a in sys.argv[2:7])
d = 0.01 * torch.randn(dim, generator=torch.Generator().manual_seed(0))
d[:5] = torch.tensor([130.0, 120.0, 110.0, 100.0, 90.0])
op = as_operator(lambda V: d[:, None] * V, dim)
base, t0 = hwm(), time.perf_counter()
if kind.startswith("slq"):
    sd = slq_density(op, iters=iters, vectors=vectors, reorth=kind[4:], max_basis_bytes=budget or None)
    out = {"reorth": sd.meta["reorth"], "formula_bytes": sd.meta["basis_bytes"], "ritz_rows": sd.meta["ritz_rows"],
           "regenerated_products": sd.meta["regenerated_products"], "ghosts": sd.meta["ghosts"],
           "lambda_max": sd.lambda_max}
elif kind == "top":
    r = top_eigenpairs(op, k=k, tol=1e-4)
    out = {"formula_bytes": r.memory_bytes, "max_basis": r.max_basis, "products": r.n_products,
           "eigenvalues": r.eigenvalues.tolist(), "converged": r.converged}
else:
    from scipy.sparse.linalg import LinearOperator, eigsh
    dn = d.numpy()
    mv = lambda x: dn.reshape(-1, *([1] * (np.asarray(x).ndim - 1))) * x
    ncv = max(2 * k + 1, 20)
    vals = eigsh(LinearOperator((dim, dim), matvec=mv, matmat=mv, dtype=np.float32), k=k, which="LA", tol=1e-4,
                 ncv=ncv, v0=np.random.default_rng(0).standard_normal(dim).astype(np.float32))[0]
    out = {"formula_bytes": ncv * dim * 4, "eigenvalues": sorted(vals.tolist(), reverse=True)}
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_extra_bytes": hwm() - base, **out}))
"""


def _child(kind: str, dim: int, iters: int, vectors: int, k: int, budget: int, pin_malloc: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if pin_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, *(str(v) for v in (dim, iters, vectors, k, budget))],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(dims: list[int], iters: int, vectors: int) -> None:
    for dim in dims:
        pin = dim * 4 < 32 << 20  # below glibc's largest dynamic mmap threshold: pin it (see tests/hessian)
        e = 4 * dim
        full = vectors * (iters + 5) * e
        cases = [("slq/auto", 0, int(1.5e9)), ("slq/full", 0, 0)] if full < 4e9 else [("slq/auto", 0, int(1.5e9))]
        cases += [("top", 1, 0), ("top", 5, 0), ("eigsh", 1, 0), ("eigsh", 5, 0)]
        for kind, k, budget in cases:
            row = {"bench": "memory", "solver": kind, "dim": dim, "iters": iters if kind.startswith("slq") else None,
                   "vectors": vectors if kind.startswith("slq") else None, "k": k or None, "budget": budget or None,
                   "full_reorth_formula_bytes": full if kind.startswith("slq") else None,
                   "malloc_mmap_threshold_pinned": pin}
            row.update(_child(kind, dim, iters, vectors, k, budget, pin))
            _emit(row)


def accuracy_rows() -> None:
    import numpy as np
    import torch
    from scipy.stats import wasserstein_distance

    sys.path.insert(0, str(ROOT))
    from landscape.hessian import as_operator, exact_hessian, slq_density
    from tests.hessian import tiny

    torch.set_num_threads(1)
    problems = []
    for name in ("mlp", "convbn", "attention", "residual", "orthogonal"):
        torch.manual_seed(0)
        model, shape = (tiny.mlp(5, 10, 3).eval(), (5,)) if name == "mlp" else tiny.models()[name]
        H = exact_hessian(model, tiny.loss, tiny.data(shape, n=40))
        problems.append((name, tiny.Dense(H), torch.linalg.eigvalsh(H).numpy(), 30, 8, range(5)))
    d = 0.01 * torch.randn(10**5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d[:5] = torch.tensor([130.0, 120.0, 110.0, 100.0, 90.0], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        dd = d.to(dtype)
        op = as_operator(lambda V, dd=dd: dd[:, None] * V, 10**5, dtype)
        problems.append((f"diag-1e5-{str(dtype)[6:]}", op, dd.double().numpy(), 100, 4, range(1)))
    for name, op, eigs, iters, vectors, seeds in problems:
        runs = {m: [slq_density(op, iters, vectors, s, reorth=m) for s in seeds] for m in ("full", "selective", "none")}
        w1 = {m: float(np.median([wasserstein_distance(eigs, sd.nodes.ravel(), None, sd.weights.ravel())
                                  for sd in r])) for m, r in runs.items()}

        def top2(sd):
            return np.stack([np.sort(n[w > 0])[::-1][:2] for n, w in zip(sd.nodes, sd.weights)])

        for mode in ("selective", "none"):
            diff = max(float(np.abs(top2(a) - top2(b)).max() / abs(eigs).max())
                       for a, b in zip(runs[mode], runs["full"]))
            _emit({"bench": "accuracy", "problem": name, "dim": int(op.dim), "iters": iters, "vectors": vectors,
                   "seeds": len(seeds), "reorth": mode, "w1_median": w1[mode], "w1_full_median": w1["full"],
                   "w1_ratio": w1[mode] / w1["full"], "top2_max_rel_diff_vs_full": diff,
                   "regenerated_products": int(np.mean([sd.meta["regenerated_products"] for sd in runs[mode]]))})


def _emit(row: dict) -> None:
    row.update(date=time.strftime("%Y-%m-%d"), machine=platform.machine(), load_avg=os.getloadavg()[0])
    print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", nargs="+", type=float, default=[1e6, 1e7])
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--vectors", type=int, default=4)
    p.add_argument("--accuracy", action="store_true", help="also the accuracy rows")
    args = p.parse_args()
    memory_rows([int(x) for x in args.dims], args.iters, args.vectors)
    if args.accuracy:
        accuracy_rows()


if __name__ == "__main__":
    main()
