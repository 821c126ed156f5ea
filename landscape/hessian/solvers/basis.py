"""How a Lanczos run keeps its vectors: full reorthogonalization when the basis fits the memory budget,
selective orthogonalization in O(vectors · P) memory when it does not (docs/methods.md §E.3).

With P = dim, e = bytes per number of the working dtype (protocol.working_dtype), k chains of m iterations:

    full        k · (m + 5) · P · e     every Lanczos vector is kept (m + 1 per chain, on the operator's device,
                                        or on the CPU when only there it fits) and the new one is projected
                                        against all of them
    selective   k · (r + 7) · P · e     q_j, q_{j−1}, the product, one replay of the chain, r ≤ R_MAX Ritz
                                        vectors per chain (Parlett-Scott selective orthogonalization, §E.3)
    none        k · 5 · P · e           the three-term recurrence only

independent of m except for "full". `plan_basis` picks "full" when its bytes fit
`memory.budget(device, memory.BASIS_SHARE, max_basis_bytes)`; otherwise "selective" with as many Ritz
vectors as fit (at most R_MAX), or "none" when not even one does. An explicit "full" that does not fit runs
its chains in groups that do (chains.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from landscape import memory
from landscape.errors import LandscapeError
from landscape.hessian.solvers.protocol import LinearOperator, working_dtype

REORTH = ("auto", "full", "selective", "none")
R_MAX = 8
"""Ritz vectors per chain kept for selective orthogonalization."""
WORKING = {"full": 5, "selective": 7, "none": 5}
"""Working vectors per chain besides the stored ones (q_j, q_{j−1}, the product and its transposed copy, and
for "selective" the replay's q and q_prev)."""


@dataclass(frozen=True)
class BasisPlan:
    """What a Lanczos run stores and where.

    Attributes:
        reorth: "full", "selective" or "none".
        device: where stored vectors live (the full basis or the Ritz vectors).
        ritz_rows: Ritz vectors kept per chain ("selective"; 0 otherwise).
        group: chains run at once ("full" in groups; else all of them).
        budget: the bytes the plan had to fit.
        bytes: the memory formula's value for this run (module docstring).
    """

    reorth: str
    device: torch.device
    ritz_rows: int
    group: int
    budget: int
    bytes: int

    def info(self) -> dict:
        """The plan as JSON-able values (recorded in SpectralDensity.meta and spectrum.json).

        Returns:
            {reorth, device, ritz_rows, group, budget, bytes}.
        """
        out = asdict(self)
        out["device"] = str(self.device)
        return out


def basis_bytes(reorth: str, iters: int, chains: int, dim: int, itemsize: int, ritz_rows: int = 0) -> int:
    """The memory formula of the module docstring.

    Args:
        reorth: "full", "selective" or "none".
        iters: Lanczos steps m.
        chains: chains run at once k.
        dim: P.
        itemsize: bytes per number e.
        ritz_rows: r for "selective".

    Returns:
        Bytes.
    """
    stored = {"full": iters, "selective": ritz_rows, "none": 0}[reorth]
    return chains * (stored + WORKING[reorth]) * dim * itemsize


def plan_basis(op: LinearOperator, iters: int, vectors: int, reorth: str = "auto", *, keep: bool = False,
               max_basis_bytes: int | None = None) -> BasisPlan:
    """Choose how a Lanczos run of `vectors` chains × `iters` steps keeps its vectors.

    Args:
        op: the operator (dim, dtype, device).
        iters: Lanczos steps.
        vectors: chains.
        reorth: "auto" (full when it fits, else selective), or one of "full", "selective", "none".
        keep: the caller needs the whole basis (forces "full").
        max_basis_bytes: the budget in bytes (default: memory.BASIS_SHARE of the free memory).

    Returns:
        The plan.
    """
    if reorth not in REORTH:
        raise LandscapeError(f"reorth must be one of {', '.join(REORTH)}, got {reorth!r}")
    dim, itemsize = int(op.dim), torch.empty((), dtype=working_dtype(op.dtype)).element_size()
    device = torch.device(op.device)
    budget = memory.budget(device, memory.BASIS_SHARE, max_basis_bytes)
    need = basis_bytes("full", iters, vectors, dim, itemsize)
    if keep or reorth in ("auto", "full"):
        if keep or need <= budget:
            return BasisPlan("full", device, 0, vectors, budget, need)
        cpu = torch.device("cpu")
        if device.type != "cpu" and need <= memory.budget(cpu, memory.BASIS_SHARE, max_basis_bytes):
            return BasisPlan("full", cpu, 0, vectors, budget, need)
        if reorth == "full":
            group = max(1, min(vectors, budget // basis_bytes("full", iters, 1, dim, itemsize)))
            return BasisPlan("full", device, 0, group, budget, basis_bytes("full", iters, group, dim, itemsize))
    if reorth in ("auto", "selective"):
        fit = budget // (vectors * dim * itemsize) - WORKING["selective"]
        rows = int(min(R_MAX, fit)) if reorth == "auto" else int(min(R_MAX, max(1, fit)))
        if rows >= 1:
            return BasisPlan("selective", device, rows, vectors, budget,
                             basis_bytes("selective", iters, vectors, dim, itemsize, rows))
    return BasisPlan("none", device, 0, vectors, budget, basis_bytes("none", iters, vectors, dim, itemsize))
