"""SLQ's Lanczos chains in groups that fit a memory budget (docs/methods.md §E.3).

With full reorthogonalization (or a kept basis for the top-k refinement) each chain stores its whole
Krylov basis, (iters + 1) × dim numbers, so `vectors` chains at once can exceed the machine (80 × 8 on an
11M-parameter ResNet-18: 26.7 GiB in float32). `chains_per_group` says how many fit; `grouped_lanczos` runs
consecutive groups from the very start vectors one batched run would draw, so the nodes, weights and top-k
equal a single batched run's.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape import memory
from landscape.hessian.solvers.lanczos import LanczosResult, lanczos, rademacher
from landscape.hessian.solvers.protocol import LinearOperator


def chains_per_group(op: LinearOperator, iters: int, vectors: int, reorth: str, keep: bool,
                     basis_device=None, max_basis_bytes: int | None = None) -> int:
    """How many Lanczos chains fit in `max_basis_bytes` at once (all of them without reorthogonalization
    or a kept basis, which store only a few vectors per chain)."""
    if reorth != "full" and not keep:
        return vectors
    device = torch.device(basis_device if basis_device is not None else op.device)
    budget = memory.budget(device, memory.BASIS_SHARE, max_basis_bytes)
    per_chain = (iters + 1) * int(op.dim) * torch.empty((), dtype=op.dtype).element_size()
    return max(1, min(vectors, budget // per_chain))


def grouped_lanczos(op: LinearOperator, vectors: int, group: int, count: int, kw: dict):
    """`lanczos` over consecutive groups of chains from the start vectors one batched run would draw;
    returns the joined coefficients and, when count > 0, the `count` best Ritz seeds over all groups."""
    starts = rademacher(vectors, int(op.dim), torch.Generator().manual_seed(kw["seed"]))
    parts, best = [], None
    for g in range(0, vectors, group):
        r = lanczos(op, start=starts[g : g + group].T, **kw)
        if count:
            values, U, AU = r.top_ritz(min(count, r.vectors * r.iters))
            if best is not None:
                values, U, AU = np.concatenate([best[0], values]), torch.cat([best[1], U]), torch.cat([best[2], AU])
            keep = np.argsort(-values, kind="stable")[:count]
            idx = torch.from_numpy(keep.copy())
            best = (values[keep], U[idx], AU[idx])
        r.basis = r.residual = None
        parts.append(r)
    joined = LanczosResult(np.concatenate([r.alpha for r in parts]), np.concatenate([r.beta for r in parts]),
                           breakdowns=sum(r.breakdowns for r in parts))
    return joined, best
