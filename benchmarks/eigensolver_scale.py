"""top_eigenpairs at 10⁶ and 10⁷ float32 dimensions against scipy's eigsh (ARPACK) on the same operator.

The operator is diagonal (five outliers 130, 120, 110, 100, 90 over an N(0, 0.01²) bulk), so a product
costs almost nothing and the wall time is the solver's own bookkeeping: `overhead_seconds` = wall −
time inside matmat. Both solvers stop at a relative accuracy of 1e-4 (landscape: ‖Av − θv‖ ≤ 1e-4·max|θ|;
ARPACK: tol=1e-4 on the Ritz values); `max_rel_error` is measured against the exact eigenvalues and
`residual_rel` is ‖Av − θv‖ / 130 recomputed here for both. One JSON line per (dim, k, solver).

    nice -n 10 env PYTHONPATH=. python benchmarks/eigensolver_scale.py [--dims 1e6 1e7] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from landscape.hessian import top_eigenpairs

TRUE = np.array([130.0, 120.0, 110.0, 100.0, 90.0])


class Diag:
    def __init__(self, d: torch.Tensor):
        self.d, self.dim, self.dtype, self.device = d, d.numel(), d.dtype, d.device

    def matmat(self, V):
        return self.d[:, None] * V


def make(dim: int, seed: int = 0) -> torch.Tensor:
    d = 0.01 * torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    d[:5] = torch.from_numpy(TRUE).float()
    return d


def residuals(d: torch.Tensor, vals: np.ndarray, V: torch.Tensor) -> np.ndarray:
    R = d[:, None].double() * V.double() - V.double() * torch.from_numpy(vals)[None, :]
    return torch.linalg.vector_norm(R, dim=0).numpy() / torch.linalg.vector_norm(V.double(), dim=0).numpy()


def run_landscape(d: torch.Tensor, k: int) -> dict:
    t0 = time.perf_counter()
    r = top_eigenpairs(Diag(d), k=k, tol=1e-4)
    wall = time.perf_counter() - t0
    return {
        "converged": r.converged,
        "matmats": r.matmats,
        "products": r.n_products,
        "seconds": wall,
        "matmat_seconds": r.matmat_seconds,
        "overhead_seconds": wall - r.matmat_seconds,
        "max_rel_error": float(np.max(np.abs(r.eigenvalues - TRUE[:k]) / TRUE[:k])),
        "residual_rel": float(residuals(d, r.eigenvalues, r.eigenvectors).max() / 130),
    }


def run_arpack(d: torch.Tensor, k: int) -> dict:
    from scipy.sparse.linalg import LinearOperator, eigsh

    dn = d.numpy()
    stats = {"products": 0, "seconds": 0.0}

    def mv(x):
        t = time.perf_counter()
        x = np.asarray(x)
        out = dn.reshape(-1, *([1] * (x.ndim - 1))) * x
        stats["products"] += 1 if x.ndim == 1 else x.shape[1]
        stats["seconds"] += time.perf_counter() - t
        return out

    op = LinearOperator((dn.size, dn.size), matvec=mv, matmat=mv, dtype=np.float32)
    t0 = time.perf_counter()
    v0 = np.random.default_rng(0).standard_normal(dn.size).astype(np.float32)
    vals, vecs = eigsh(op, k=k, which="LA", tol=1e-4, v0=v0)
    wall = time.perf_counter() - t0
    order = np.argsort(-vals)
    vals, vecs = vals[order].astype(np.float64), torch.from_numpy(np.ascontiguousarray(vecs[:, order]))
    return {
        "converged": True,
        "products": stats["products"],
        "seconds": wall,
        "matmat_seconds": stats["seconds"],
        "overhead_seconds": wall - stats["seconds"],
        "max_rel_error": float(np.max(np.abs(vals - TRUE[:k]) / TRUE[:k])),
        "residual_rel": float(residuals(d, vals, vecs).max() / 130),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", nargs="+", type=float, default=[1e6, 1e7])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--solvers", nargs="+", default=["landscape", "arpack"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for dim in map(int, args.dims):
        d = make(dim)
        for k in args.ks:
            for name in args.solvers:
                row = {"solver": name, "dim": dim, "k": k, "dtype": "float32", "threads": args.threads}
                try:
                    row.update((run_landscape if name == "landscape" else run_arpack)(d, k))
                except Exception as e:  # noqa: BLE001 - a failing peer is a row, not a crash
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                row.update(torch=torch.__version__, machine=platform.machine())
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
