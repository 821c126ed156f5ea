"""Lanczos tridiagonalization with k random vectors run as one batch: one `matmat` per iteration.

For each vector q₀ (Rademacher entries ±1/√dim, from a CPU generator seeded with `seed`, so the run
is the same on every device):

    w = A q_j − α_j q_j − β_{j−1} q_{j−1},   α_j = q_jᵀ A q_j,   β_j = ‖w‖ (after reorthogonalization),
    q_{j+1} = w / β_j

and T = tridiag(β, α, β) (float64, m × m). Every inner product over dim is summed in float64 over float32
pieces (linalg.gram). How the new vector is kept orthogonal to the old ones (basis.py decides from the memory
budget; the result records it):

- "full" projects w against every stored Lanczos vector of its chain (classical Gram-Schmidt, a second pass
  when the first removed most of w, the "twice is enough" test of Daniel, Gragg, Kaufman & Stewart 1976).
  Memory k·(m + 5)·P numbers.
- "selective" stores no basis (selective.py): once a Ritz value converges, the chain is replayed from q₀ to
  rebuild the converged Ritz vectors, and every later w is projected against them (Parlett & Scott 1979).
  Memory k·(r + 7)·P numbers, r ≤ 8 Ritz vectors per chain; the replay costs at most a quarter of the run's
  products. Values that converge later grow ghost copies, merged by ghosts.py.
- "none": the three-term recurrence alone, memory k·5·P; ghosts merged by ghosts.py.

A breakdown (β_j ≤ ε^{3/4}·‖T‖, an invariant subspace found) records β_j = 0 and continues with a fresh
random vector orthogonal to what the chain keeps; T is then block diagonal, the first block's Ritz values
are eigenvalues of A, and the later blocks get zero quadrature weight. The vectors are kept in the working
dtype (float32 for a bf16/fp16 operator, else the operator's; protocol.apply casts each block for matmat).

A long run can be checkpointed (`Checkpoint`): every `every` iterations `on_state` receives the Lanczos
state (CPU tensors, ints and strings only: iterations done, α/β so far, the current and previous vectors,
what the mode keeps, the running ‖T‖ scale, the breakdown count and generator state, and the problem's
fingerprint), and `Checkpoint(state=...)` continues from it with the same arithmetic, so the result is
bit-identical to an uninterrupted run on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.solvers.basis import BasisPlan, plan_basis
from landscape.hessian.solvers.linalg import gram, norm_scratch, rademacher, row_dots, row_norms
from landscape.hessian.solvers.protocol import (
    LinearOperator,
    apply,
    check_operator,
    full_dim,
    over_shards,
    unit_roundoff,
    working_dtype,
)
from landscape.hessian.solvers.selective import Selective
from landscape.hessian.solvers.tridiagonal import LanczosResult

FINGERPRINT = ("dim", "vectors", "iters", "seed", "reorth", "dtype")
_STATE_KEYS = ("done", "alpha", "beta", "q", "q_prev", "scale", "breakdowns", "rng")


@dataclass(frozen=True)
class Checkpoint:
    """Saving and resuming a Lanczos run.

    Attributes:
        state: a dict saved by an earlier run's `on_state`, to continue from (start vectors are then ignored).
        on_state: called with a fresh state dict (fit for `torch.save` / `torch.load(weights_only=True)`)
            after every `every`-th iteration but the last.
        every: iterations between states.
    """

    state: dict | None = None
    on_state: Callable[[dict], None] | None = None
    every: int = 10


def _axpy_(w: Tensor, x: Tensor, c: Tensor) -> None:
    """w_p ← w_p − c_p x_p row by row (no temporary of the block's size)."""
    for p in range(w.shape[0]):
        w[p].add_(x[p], alpha=-float(c[p]))


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """w − B (Bᵀ w) per chain: w [k, dim], basis [k, j, dim] (any device); w returns on its own device."""
    wb = w.to(basis.device)
    for p in range(wb.shape[0]):
        c = gram(basis[p], wb[p : p + 1])[:, 0].to(device=wb.device, dtype=wb.dtype)
        wb[p].addmv_(basis[p].T, c, alpha=-1)
    return wb.to(w.device)


class _Run:
    """The state of k chains and one step of the recurrence."""

    def __init__(self, op: LinearOperator, plan: BasisPlan, iters: int, seed: int, start: Tensor | None, k: int):
        self.op, self.plan, self.iters, self.seed, self.k = op, plan, iters, seed, k
        self.wd, self.device, self.dim = working_dtype(op.dtype), torch.device(op.device), int(op.dim)
        self.eps = unit_roundoff(op.dtype)
        self.tiny = torch.finfo(self.wd).eps ** 0.75
        self.gen = torch.Generator().manual_seed(seed)
        self.start = start
        self.q = self.start_rows(self.gen)
        self.q_prev: Tensor | None = None
        self.spare: Tensor | None = None
        self.scratch = norm_scratch(k, self.dim, self.device)
        self.beta_prev: Tensor | None = None
        self.alphas: list[Tensor] = []
        self.betas: list[Tensor] = []
        self.scale = torch.zeros(k, dtype=torch.float64)
        self.breakdowns, self.done = 0, 0
        self.last_beta = torch.zeros(k, dtype=torch.float64)
        self.residual: Tensor | None = None
        self.basis = None
        if plan.reorth == "full":
            self.basis = torch.empty(k, iters, self.dim, dtype=self.wd, device=plan.device)
        self.selective = Selective(plan.ritz_rows, self.eps, iters, k) if plan.reorth == "selective" else None

    def start_rows(self, gen: torch.Generator) -> Tensor:
        """The unit start vectors [k, dim] in the working dtype: `start`'s columns, or Rademacher rows / √dim."""
        if self.start is not None:
            q = torch.as_tensor(self.start).to(torch.float64).cpu().reshape(self.dim, -1).T
            return (q / row_norms(q)[:, None]).to(device=self.device, dtype=self.wd)
        q = rademacher(self.k, self.dim, gen, self.wd, self.device)
        return q.mul_(1 / full_dim(self.op) ** 0.5)

    def step(self, j: int) -> None:
        """Iteration j: one matmat of all chains, α_j, β_j and q_{j+1}."""
        q = self.q
        if self.basis is not None:
            self.basis[:, j] = q.to(self.basis.device)
        w = apply(self.op, q, out=self.spare if self.spare is not None else torch.empty_like(q))
        alpha = row_dots(q, w)
        _axpy_(w, q, alpha)
        if self.q_prev is not None:
            _axpy_(w, self.q_prev, self.beta_prev)
        if self.basis is not None:
            before = row_norms(w, self.scratch).cpu()
            w = _orthogonalize(w, self.basis[:, : j + 1])
            if bool((row_norms(w, self.scratch).cpu() < before / 2**0.5).any()):
                w = _orthogonalize(w, self.basis[:, : j + 1])
        elif self.selective is not None:
            self.selective.project(w, j)
        beta = row_norms(w, self.scratch).cpu()
        self.alphas.append(alpha)
        self.done = j + 1
        if j + 1 == self.iters:
            self.last_beta, self.residual = beta, w
            return
        prev = self.beta_prev if self.beta_prev is not None else torch.zeros_like(beta)
        self.scale = torch.maximum(self.scale, alpha.abs() + beta + prev)
        broken = beta <= self.tiny * self.scale
        if bool(broken.any()):
            self.breakdowns += int(broken.sum())
            beta = self.restart_(w, beta, broken, self.fresh(self.gen, q, self.q_prev, j))
        self.betas.append(beta)
        w.mul_((1 / torch.where(beta > 0, beta, torch.ones_like(beta))).to(device=w.device, dtype=w.dtype)[:, None])
        self.spare = self.q_prev  # the buffer of q_{j−1} takes the next product
        self.q_prev, self.q, self.beta_prev = q, w, beta
        if self.selective is not None:
            self.selective.after_step(self, j)

    def fresh(self, gen: torch.Generator, q: Tensor, q_prev: Tensor | None, j: int) -> Tensor:
        """Unit random rows orthogonal to what each chain keeps at step j, and to q and q_prev."""
        fresh = rademacher(self.k, self.dim, gen, self.wd, self.device)
        if self.basis is not None:
            for _ in range(2):
                fresh = _orthogonalize(fresh, self.basis[:, : j + 1])
        else:
            if self.selective is not None:
                self.selective.project(fresh, j)
            for v in (q, q_prev) if q_prev is not None else (q,):
                _axpy_(fresh, v, row_dots(fresh, v))
        return fresh.mul_((1 / row_norms(fresh, self.scratch)).to(device=fresh.device, dtype=fresh.dtype)[:, None])

    @staticmethod
    def restart_(w: Tensor, beta: Tensor, broken: Tensor, fresh: Tensor) -> Tensor:
        """Broken chains continue from `fresh` (w's rows replaced in place, scaled back by 1/β = 1); returns β
        with zeros at the breakdowns."""
        for p in torch.nonzero(broken).flatten().tolist():
            w[p].copy_(fresh[p])
        return torch.where(broken, torch.zeros_like(beta), beta)

    def replay(self, coeffs: list[np.ndarray], used: np.ndarray) -> None:
        """Rebuild Ritz vectors into the selective rows: Y[p, used_p + t] = Σ_i c_p[i, t] q_i over the first
        len(c_p) Lanczos vectors of chain p, regenerated from q₀ with the recorded α and β and the same
        selective orthogonalization the run applied (breakdowns redrawn in order)."""
        sel, J = self.selective, coeffs[0].shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        q, q_prev, spare = self.start_rows(gen), None, None
        for i in range(J):
            for p, c in enumerate(coeffs):
                for t in range(c.shape[1]):
                    sel.Y[p, used[p] + t].add_(q[p], alpha=float(c[i, t]))
            if i + 1 == J:
                break
            w = apply(self.op, q, out=spare if spare is not None else torch.empty_like(q))
            _axpy_(w, q, self.alphas[i])
            if q_prev is not None:
                _axpy_(w, q_prev, self.betas[i - 1])
            sel.project(w, i)
            beta = self.betas[i]
            if bool((beta == 0).any()):
                self.restart_(w, beta, beta == 0, self.fresh(gen, q, q_prev, i))
            w.mul_((1 / torch.where(beta > 0, beta, torch.ones_like(beta))).to(dtype=w.dtype, device=w.device)[:, None])
            spare, q_prev, q = q_prev, q, w
            if (sel.since == i + 1).any():
                sel.project(q, i + 1)
                sel.project(q_prev, i + 1)

    def state(self, fingerprint: dict) -> dict:
        """The checkpoint dict after `done` iterations."""
        out = {**fingerprint, "done": self.done, "alpha": torch.stack(self.alphas, 1),
               "beta": torch.stack(self.betas, 1), "q": self.q.to("cpu", copy=True),
               "q_prev": self.q_prev.to("cpu", copy=True),
               "scale": self.scale.clone(), "breakdowns": self.breakdowns, "rng": self.gen.get_state()}
        if self.basis is not None:
            out["basis"] = self.basis[:, : self.done].to("cpu", copy=True)
        if self.selective is not None:
            out.update(self.selective.state())
            if self.start is not None:
                out["start"] = torch.as_tensor(self.start).to("cpu", copy=True)
        return out

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint dict (checked by `_check_state`)."""
        self.done = int(state["done"])
        self.alphas = list(state["alpha"].to(torch.float64).unbind(1))
        self.betas = list(state["beta"].to(torch.float64).unbind(1))
        self.q = state["q"].to(device=self.device, dtype=self.wd)
        self.q_prev = state["q_prev"].to(device=self.device, dtype=self.wd)
        self.beta_prev = self.betas[-1]
        self.scale = state["scale"].to(torch.float64).cpu()
        self.breakdowns = int(state["breakdowns"])
        self.gen.set_state(state["rng"])
        if self.basis is not None:
            self.basis[:, : self.done] = state["basis"].to(device=self.basis.device, dtype=self.wd)
        if self.selective is not None:
            self.selective.restore(state, self.device, self.wd)
            if "start" in state:
                self.start = state["start"]

    def result(self, keep_basis: bool) -> LanczosResult:
        """The coefficients and what the mode kept."""
        alpha = torch.stack(self.alphas, 1).numpy()
        beta = torch.stack(self.betas, 1).numpy() if self.betas else np.zeros((self.k, 0))
        out = LanczosResult(alpha, beta, self.last_beta.numpy(), self.plan.reorth, unit_roundoff(self.wd), self.eps,
                            self.breakdowns, plan=self.plan)
        if keep_basis:
            out.basis, out.residual = self.basis, self.residual
        sel = self.selective
        if sel is not None and sel.Y is not None:
            out.ritz_vectors, out.ritz_values, out.ritz_radius = sel.Y, sel.values, sel.radius
        out.regenerated = sel.regenerated if sel is not None else 0
        return out


def _check_state(state: dict, fingerprint: dict, plan: BasisPlan) -> None:
    """A state must hold every field and match this run's fingerprint (a LandscapeError names the difference)."""
    if not isinstance(state, dict):
        raise LandscapeError(f"lanczos: a state is a dict, got {type(state).__name__}")
    extra = {"full": ("basis",), "selective": Selective.STATE_KEYS, "none": ()}[plan.reorth]
    missing = [k for k in (*FINGERPRINT, *_STATE_KEYS, *extra) if k not in state]
    if missing:
        raise LandscapeError(f"lanczos: the state lacks {', '.join(missing)}")
    for name in FINGERPRINT:
        if state[name] != fingerprint[name]:
            raise LandscapeError(
                f"lanczos: the state is for {name}={state[name]!r} but this run has {name}={fingerprint[name]!r}"
            )
    if not 1 <= state["done"] < fingerprint["iters"]:
        last = fingerprint["iters"] - 1
        raise LandscapeError(f"lanczos: the state's iteration count {state['done']} is not in 1..{last}")


def _plan(op: LinearOperator, iters: int, vectors: int, reorth: str, keep_basis: bool,
          max_basis_bytes: int | None, state: dict | None) -> BasisPlan:
    """The memory plan; a resumed "auto" run keeps the mode (and Ritz vector count) its state was saved with."""
    if reorth == "auto" and isinstance(state, dict) and state.get("reorth") in ("full", "selective", "none"):
        reorth = state["reorth"]
    plan = plan_basis(op, iters, vectors, reorth, keep=keep_basis, max_basis_bytes=max_basis_bytes)
    if plan.reorth == "full" and plan.group < vectors:
        plan = replace(plan, group=vectors)  # lanczos runs the chains it is given; slq_density groups them
    rows = state.get("ritz_values") if isinstance(state, dict) else None
    if plan.reorth == "selective" and isinstance(rows, Tensor) and rows.dim() == 2:
        plan = replace(plan, ritz_rows=rows.shape[1])
    return plan


@over_shards
def lanczos(
    op: LinearOperator,
    iters: int = 80,
    vectors: int = 1,
    seed: int = 0,
    *,
    reorth: str = "auto",
    start: Tensor | None = None,
    keep_basis: bool = False,
    max_basis_bytes: int | None = None,
    callback: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> LanczosResult:
    """Run `iters` Lanczos steps for `vectors` start vectors at once (one matmat per step).

    Memory (P = dim, e bytes per number of the working dtype; basis.py): "full" k·(m + 5)·P·e, "selective"
    k·(r + 7)·P·e with r ≤ 8, "none" k·5·P·e, for k chains of m steps.

    Args:
        op: the operator (dim, dtype, device, matmat; `protocol.as_operator` wraps a plain function).
        iters: Lanczos steps m (at most dim).
        vectors: chains k, each from a Rademacher vector drawn with `seed` (ignored when `start` is given).
        seed: seed of the start vectors and of the fresh vectors after a breakdown.
        reorth: "auto" (full when the basis fits the memory budget, else selective), "full", "selective"
            or "none" (module docstring).
        start: [dim, k] start vectors instead of random ones.
        keep_basis: also return the basis and final residuals (forces "full").
        max_basis_bytes: the memory budget (default memory.BASIS_SHARE of the free memory).
        callback: called with j after iteration j (j = 1..iters), e.g. to advance a progress bar.
        checkpoint: save the state periodically and/or resume from one (`Checkpoint`).

    Returns:
        A `LanczosResult`.
    """
    check_operator(op, "lanczos")
    dim = int(op.dim)
    if iters < 1:
        raise LandscapeError(f"lanczos: iters must be at least 1, got {iters}")
    if iters > dim:
        raise LandscapeError(f"lanczos: iters ({iters}) cannot exceed the dimension ({dim})")
    checkpoint = checkpoint or Checkpoint()
    if checkpoint.every < 1:
        raise LandscapeError(f"lanczos: a checkpoint's every must be at least 1, got {checkpoint.every}")
    if start is not None:
        vectors = torch.as_tensor(start).reshape(dim, -1).shape[1]
    elif vectors < 1:
        raise LandscapeError(f"lanczos: vectors must be at least 1, got {vectors}")
    plan = _plan(op, iters, vectors, reorth, keep_basis, max_basis_bytes, checkpoint.state)
    fingerprint = {"dim": dim, "vectors": int(vectors), "iters": int(iters), "seed": int(seed), "reorth": plan.reorth,
                   "dtype": str(op.dtype).removeprefix("torch.")}
    run = _Run(op, plan, iters, seed, start, vectors)
    if checkpoint.state is not None:
        _check_state(checkpoint.state, fingerprint, plan)
        run.restore(checkpoint.state)
    for j in range(run.done, iters):
        run.step(j)
        if callback is not None:
            callback(j + 1)
        if checkpoint.on_state is not None and j + 1 < iters and (j + 1) % checkpoint.every == 0:
            checkpoint.on_state(run.state(fingerprint))
    return run.result(keep_basis)
