"""SLQ's Lanczos chains in groups that fit a memory budget, when full reorthogonalization is asked for
(docs/methods.md §E.3).

Full reorthogonalization stores each chain's whole Krylov basis, (iters + 5) × dim numbers with its working
vectors (basis.py), so `vectors` chains at once can exceed the machine (80 × 8 on an 11M-parameter
ResNet-18: 26.7 GiB in float32). `basis.plan_basis(reorth="full")` says how many fit (`group`);
`grouped_lanczos` runs consecutive groups from the very start vectors one batched run would draw, so the
nodes, weights and top-k equal a single batched run's. (The default, reorth="auto", switches to selective
orthogonalization instead, which needs no groups.)
"""

from __future__ import annotations

import numpy as np
import torch

from landscape.hessian.solvers.lanczos import lanczos
from landscape.hessian.solvers.linalg import rademacher
from landscape.hessian.solvers.protocol import LinearOperator
from landscape.hessian.solvers.tridiagonal import LanczosResult


def grouped_lanczos(op: LinearOperator, vectors: int, group: int, count: int, kw: dict):
    """Full-reorthogonalization Lanczos over consecutive groups of chains.

    Args:
        op: the operator.
        vectors: chains in all.
        group: chains per run.
        count: how many of the best Ritz seeds (values, U, AU) to keep over all groups (0: none).
        kw: the other `lanczos` keywords (iters, seed, callback, max_basis_bytes).

    Returns:
        (the joined LanczosResult, the seeds or None).
    """
    gen = torch.Generator().manual_seed(kw["seed"])  # drawn row by row: each group's rows are the batched draw's
    parts, best = [], None
    for g in range(0, vectors, group):
        start = rademacher(min(group, vectors - g), int(op.dim), gen, torch.float32).T
        r = lanczos(op, start=start, reorth="full", keep_basis=count > 0, **kw)
        if count:
            values, U, AU = r.top_ritz(min(count, r.vectors * r.iters))
            if best is not None:
                values, U, AU = np.concatenate([best[0], values]), torch.cat([best[1], U]), torch.cat([best[2], AU])
            keep = np.argsort(-values, kind="stable")[:count]
            idx = torch.from_numpy(keep.copy())
            best = (values[keep], U[idx], AU[idx])
        r.basis = r.residual = None
        parts.append(r)
    first = parts[0]
    joined = LanczosResult(np.concatenate([r.alpha for r in parts]), np.concatenate([r.beta for r in parts]),
                           np.concatenate([r.last_beta for r in parts]), "full", first.eps, first.eps_products,
                           sum(r.breakdowns for r in parts), plan=first.plan)
    return joined, best
