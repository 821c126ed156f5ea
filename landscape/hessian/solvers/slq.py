"""Stochastic Lanczos quadrature (SLQ): the spectral density of an operator from `vectors` Lanczos chains run
as one batch, and the top eigenpairs refined from the same Krylov run (docs/methods.md §E.2–E.3).

For a unit vector v, vᵀ f(A) v = Σ_i w_i f(θ_i) with the Ritz values θ_i of v's chain (nodes) and weights
w_i = (first component of T's i-th eigenvector)² (Golub & Meurant; Lin, Saad & Yang 2016); averaged over
Rademacher vectors this estimates μ = (1/dim) Σ_j δ(λ_j) (spectrum.SpectralDensity holds the result).

Memory (P = dim, e bytes per number of the working dtype, k vectors, m = iters): chosen by basis.plan_basis
from `memory.budget(device, memory.BASIS_SHARE)` and recorded in `SpectralDensity.meta` —
"full" k·(m + 5)·P·e when it fits, else "selective" k·(r + 7)·P·e (r ≤ 8 Ritz vectors per chain; at most
half the run's products again to replay chains) or "none" k·5·P·e. The top-k refinement adds
`top_eigenpairs`' (3m' + 2k' + 3b)·P·e with its own budget-bounded basis m'.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from landscape.hessian.solvers.basis import plan_basis
from landscape.hessian.solvers.chains import grouped_lanczos
from landscape.hessian.solvers.eigen import top_eigenpairs
from landscape.hessian.solvers.errorbars import rayleigh_stderr
from landscape.hessian.solvers.lanczos import Checkpoint, lanczos
from landscape.hessian.solvers.protocol import LinearOperator, check_operator, full_dim, over_shards
from landscape.hessian.solvers.spectrum import MIN_STDERR_VECTORS, SpectralDensity
from landscape.hessian.solvers.tridiagonal import LanczosResult


@dataclass(frozen=True)
class TopK:
    """The top-k refinement of an SLQ run.

    The best Ritz vectors of all chains (with their products from the Lanczos relation when the basis was
    kept) seed `top_eigenpairs`, which verifies them with one product of k vectors and iterates further only
    if they have not converged.

    Attributes:
        k: eigenpairs wanted (0: none).
        tol: their relative residual tolerance (default: top_eigenpairs').
        max_matmats: matmats the refinement may spend.
        data_stderr: also λmax's data-noise stderr from per-batch Rayleigh quotients (one more pass with one
            vector; nan for operators without batches).
        block_size: vectors per matmat of the refinement (default `top_eigenpairs`' min(k, 4)); its memory is
            (3m + 2k + 3b)·P·e with m ≥ k + b, so b = 1 is the smallest (31 vectors for k = 5 instead of 49).
    """

    k: int = 0
    tol: float | None = None
    max_matmats: int = 100
    data_stderr: bool = True
    block_size: int | None = None


def _run_chains(op: LinearOperator, iters: int, vectors: int, seed: int, topk: TopK, reorth: str,
                max_basis_bytes: int | None, callback, checkpoint: Checkpoint | None):
    """The Lanczos chains as the memory plan says: one batched run, or groups for a "full" that does not fit.
    Returns (LanczosResult, top-k seeds or None, chains per run)."""
    state = checkpoint.state if checkpoint is not None else None
    if state is not None and reorth == "auto" and isinstance(state, dict):
        reorth = state.get("reorth", reorth)  # a resumed run keeps its mode and layout
    plan = plan_basis(op, iters, vectors, reorth, max_basis_bytes=max_basis_bytes)
    count = min(vectors * iters, 2 * topk.k + 2) if topk.k else 0
    kw = {"iters": iters, "seed": seed, "callback": callback, "max_basis_bytes": max_basis_bytes}
    if plan.group < vectors and state is None:
        if checkpoint is not None and checkpoint.on_state is not None:
            warnings.warn(f"slq_density: the Lanczos basis of {vectors} vectors exceeds the memory budget; running "
                          f"{-(-vectors // plan.group)} groups of {plan.group}, without mid-run checkpoints",
                          stacklevel=3)
        res, seeds = grouped_lanczos(op, vectors, plan.group, count, kw)
        return res, seeds, plan.group
    res = lanczos(op, vectors=vectors, reorth=plan.reorth, keep_basis=bool(count) and plan.reorth == "full",
                  checkpoint=checkpoint, **kw)
    seeds = res.top_ritz(count) if count else None
    res.basis = res.residual = None
    return res, seeds, vectors


def _check_interlacing(sd: SpectralDensity, nodes: np.ndarray) -> None:
    """A Ritz value never exceeds λmax (Cauchy interlacing), so a refined top eigenvalue below the run's largest
    Ritz value by more than its residual is not λmax: the refinement stopped on an eigenvalue inside the spectrum
    (a residual small relative to ‖A‖ certifies an eigenvalue, not the largest). It is marked unconverged, with a
    warning, and `meta["top_below_ritz"]` records the gap.

    Args:
        sd: the density with its refined `.top`.
        nodes: the run's Ritz values [chains, m].
    """
    top_ritz = float(np.nanmax(nodes))
    gap = top_ritz - float(sd.top.eigenvalues[0]) - float(sd.top.residuals[0])
    if gap > 1e-6 * max(abs(top_ritz), 1e-30):
        sd.top.converged = False
        sd.meta["top_below_ritz"] = gap
        warnings.warn(f"slq_density: the refined top eigenvalue {sd.top.eigenvalues[0]:.6g} lies below the run's "
                      f"largest Ritz value {top_ritz:.6g} by more than its residual: the refinement did not reach "
                      "λmax (raise TopK.max_matmats); it is marked unconverged", stacklevel=3)


def _meta(res: LanczosResult, weights: np.ndarray, seed: int, group: int, seconds: float) -> dict:
    """What the run did, JSON-able: its settings, cost and memory plan (written to spectrum.json)."""
    plan = res.plan.info() if res.plan is not None else {}
    return {
        "seed": seed, "reorth": res.reorth, "breakdowns": res.breakdowns, "seconds": seconds,
        "chains_per_group": group, "basis_bytes": plan.get("bytes"), "basis_budget": plan.get("budget"),
        "basis_device": plan.get("device"), "ritz_rows": plan.get("ritz_rows"),
        "regenerated_products": res.regenerated,
        "ghosts": int((weights == 0).sum()) if res.reorth != "full" else 0,
    }


@over_shards
def slq_density(
    op: LinearOperator,
    iters: int = 80,
    vectors: int = 4,
    seed: int = 0,
    *,
    top_k: int | TopK = 0,
    reorth: str = "auto",
    max_basis_bytes: int | None = None,
    callback=None,
    checkpoint: Checkpoint | None = None,
) -> SpectralDensity:
    """SLQ of an operator: `vectors` Lanczos chains of `iters` steps, batched into one matmat per step.

    Memory (module docstring; P = dim, e bytes per number, k = vectors, m = iters): "full" k·(m + 5)·P·e
    when it fits `max_basis_bytes` (default memory.BASIS_SHARE of the free memory), else "selective"
    k·(r + 7)·P·e, r ≤ 8. An explicit reorth="full" that does not fit runs its chains in consecutive groups
    that do, from the same start vectors (the nodes and weights equal one batched run's; no mid-run
    checkpoints then).

    Args:
        op: the operator (dim, dtype, device, matmat).
        iters: Lanczos steps per chain.
        vectors: random (Rademacher) start vectors; vector-noise stderrs need at least 3.
        seed: seed of the vectors.
        top_k: how many top eigenpairs to refine from the same run (`.top`), or a `TopK` with its options.
        reorth: "auto", "full", "selective" or "none" (lanczos.py).
        max_basis_bytes: the memory budget of the Lanczos vectors.
        callback: called with j after iteration j, e.g. to advance a progress bar.
        checkpoint: save the Lanczos state periodically and/or resume from one; a resumed run gives the same
            nodes and weights as an uninterrupted one.

    Returns:
        A `SpectralDensity` whose meta records the memory plan ("reorth", "basis_bytes", "basis_budget",
        "ritz_rows", "regenerated_products", "ghosts").
    """
    check_operator(op, "slq_density")
    topk = top_k if isinstance(top_k, TopK) else TopK(int(top_k))
    if vectors < MIN_STDERR_VECTORS:
        warnings.warn(f"slq_density: {vectors} vector(s) give no vector-noise error bars (trace_stderr, "
                      f"negative_ratio_stderr, ... are nan); use vectors >= {MIN_STDERR_VECTORS}, or 5 and more "
                      "for intervals", stacklevel=2)
    t0 = time.perf_counter()
    res, seeds, group = _run_chains(op, iters, vectors, seed, topk, reorth, max_basis_bytes, callback, checkpoint)
    nodes, weights = res.ritz()
    sd = SpectralDensity(nodes, weights, full_dim(op), _meta(res, weights, seed, group, time.perf_counter() - t0))
    if topk.k:
        t1 = time.perf_counter()
        _, U, AU = seeds
        init = U.T if U.numel() else None
        sd.top = top_eigenpairs(op, topk.k, init=init, init_product=AU.T if AU is not None and init is not None
                                else None, tol=topk.tol, max_matmats=topk.max_matmats, seed=seed,
                                block_size=topk.block_size)
        del U, AU
        _check_interlacing(sd, nodes)
        if topk.data_stderr and sd.top.converged:  # an unconverged vector's stderr is not λmax's
            sd.lambda_max_noise = rayleigh_stderr(op, sd.top.eigenvectors[:, 0])
        sd.meta["top_seconds"] = time.perf_counter() - t1
    return sd

