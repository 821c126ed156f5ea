"""How an operator runs, decided once at construction: `make_plan(...)` returns a frozen `Plan`.

On the first batch(es):
0. Affordability (`budgeted.py`): one measured forward pass of the first batch decides whether the trial
   below is affordable (time and memory); when it is not, the plan is budgeted: one prepared batch, the loss
   computed twice, and the product checks made on the first data pass (`budgeted.FirstPassChecks`).
1. Sizing: the bytes a kept gradient graph holds per sample (`landscape.memory.measure` of one forward),
   which bounds the lane chunk, the graph cache and batch merging (`backends.Sizing`).
2. Backend: trial products of two random vectors with each candidate ("double_backward", then "func");
   with backend="auto" the faster is kept. Costs per data pass: double_backward counts its primal
   (`prepare`) only when the kept graphs will not fit the cache (half the budget); func must win by 20%
   on a CPU to displace double_backward, and vice versa on a GPU, so near-ties do not flip between
   runs. func is not timed (`func_trial_pointless`) on a CPU when modules its backend is slow through
   hold most of the parameters (`SLOW_SHARE`; the Hessian's: convolutions, measured slower there, never
   by less than the margin; the GGN's func is faster on conv nets and declares none), nor when a whole
   pass costs under ~30 ms and forward-mode AD is not loaded yet: timing it first pays torch.func's
   one-time setup (importing torch._dynamo, scripting the jvp decompositions: 1–17 s in a fresh process)
   and holds its trial's memory. Only a backend compared with another is timed twice. A backend that
   raises is skipped. `Plan.choice` says what decided.
   When no backend can differentiate the model and a failure names a fused attention kernel, the trials
   are repeated under the math SDPA kernel (`landscape.objective.kernels`), which every product then uses.
   "auto" turns to the finite-difference backend (first-order gradients only) only when both exact
   backends fail, or fail the symmetry check; their reasons are kept in `Plan.rejected`.
3. Checks (`checks.py`): finite products; with `check_deterministic`, a second product of the same
   vectors on the first batch, from a state prepared anew after the trial's was released (one kept graph
   at a time; the new one is the first pass's), reproduces the first to 1e3·eps; the products of three vectors are
   symmetric (uᵀHv = vᵀHu) to 10·√eps. With backend="auto", a backend that fails symmetry gives way to
   the other (recorded in `Plan.rejected`).
4. Merging (`merging.py`): batches are concatenated up to `budget/2 / (per-sample state · lanes)` samples
   when the first two batches give the same outputs and weighted mean loss concatenated as separately, so
   the merged operator is the same matrix.
Under torch.distributed the ranks agree on each decision (backend by majority vote of the timings,
merging by the smallest target) and a failure on one rank is raised on all.

The steps are `planner.Planner`'s; `Plan`, `Request` and `compute_context` are `plan_types`' (all re-exported here).
"""

from __future__ import annotations

from typing import Any

import torch

from landscape import distributed as _dist
from landscape.errors import LandscapeError
from landscape.hessian.operators import budgeted
from landscape.hessian.operators.flat import Snapshot
from landscape.hessian.operators.merging import merge_target
from landscape.hessian.operators.plan_types import Plan, Request, compute_context
from landscape.hessian.operators.planner import EXACT, FALLBACK, SLOW_SHARE, Planner

__all__ = ["EXACT", "FALLBACK", "SLOW_SHARE", "Plan", "Planner", "Request", "compute_context", "make_plan"]


def make_plan(snap: Snapshot, req: Request) -> tuple[Plan, Any, Any]:
    """Decide backend, sizing, kernel and merging for `snap` (see the module docstring).

    Args:
        snap: the objective at θ.
        req: what the caller asked.

    Returns:
        The frozen Plan, the chosen backend (as tried: a finite-difference backend keeps its calibrated step),
        and its prepared state of the first batch (None when there is none to reuse), which the operator's
        first data pass takes instead of preparing it again.
        LandscapeError when no backend yields finite, deterministic, symmetric products.
    """
    planner = Planner(snap, req)
    needs_trial = getattr(req.backends.get(req.backend), "needs_trial", False)
    if req.backend != "auto" and not (req.check_deterministic or req.check_symmetric or needs_trial):
        return _dist.agreed(req.distributed, planner.light)
    probe = _dist.agreed(req.distributed, lambda: budgeted.probe(snap))
    full, why = budgeted.affordable(probe, req.budget)
    if req.distributed:  # one rank that cannot afford the trial budgets them all
        flag = torch.tensor([float(not full)], dtype=torch.float64, device=_dist.comm_device())
        full = not bool(_dist.all_reduce_max(flag)[0])
        why = why or "another rank could not afford the trial"
    if not full and not needs_trial:
        return _dist.agreed(req.distributed, lambda: planner.budgeted(probe, why))
    if not full and req.check_deterministic:  # a backend that must be tried (finite differences): no extra product
        _dist.agreed(req.distributed, lambda: budgeted.check_loss_twice(snap, probe))
        planner.product_determinism = False
    trials, vectors, first = _dist.agreed(req.distributed, lambda: planner.try_backends(probe))
    chosen = planner.agree_backend(trials)
    backend, asymmetry = _dist.agreed(req.distributed, lambda: planner.validate_in_turn(chosen, trials, vectors, first))
    merge = _dist.agreed(req.distributed, lambda: merge_target(snap, req.merge, req.budget, planner.sizing, first,
                                                                 backend, planner.precision, planner.kernel))
    if req.distributed:
        flags = torch.tensor([merge is None, -(merge or 0), backend == "func", -(backend == "func")],
                             dtype=torch.float64, device=_dist.comm_device())
        _dist.all_reduce_max(flags)
        merge = None if flags[0] else int(-flags[1])
        if flags[2] != -flags[3]:
            raise LandscapeError("the ranks' symmetry checks kept different backends; pass backend=")
    impl = trials[backend][0]
    determinism = () if not req.check_deterministic else ("deterministic",) if planner.product_determinism else \
        (f"deterministic: the first batch's loss twice (products: skipped: {why})",)
    done = ("finite", *determinism, "symmetric", *_error_check(impl))
    plan = Plan(backend, planner.sizing, merge, planner.math, asymmetry, dict(planner.rejected), done,
                choice=planner.choice, autocast=req.autocast)
    return plan, impl, trials[backend][3] if merge is None else None


def _error_check(impl: Any) -> tuple[str, ...]:
    """The product-error check of an approximate backend (finite differences), as a `Plan.checks` entry."""
    error = getattr(impl, "error_estimate", None)
    if error is None:
        return ()
    return (f"product error ≤ {error:.1e} (Richardson estimate; tolerance {impl.describe()['tolerance']:.0e})",)
