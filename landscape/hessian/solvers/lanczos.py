"""Lanczos tridiagonalization with k random vectors run as one batch: one `matmat` per iteration.

For each vector q₀ (Rademacher entries ±1/√dim, from a CPU generator seeded with `seed`, so the run
is the same on every device):

    w = A q_j − α_j q_j − β_{j−1} q_{j−1},   α_j = q_jᵀ A q_j,   β_j = ‖w‖ (after reorthogonalization),
    q_{j+1} = w / β_j

and T = tridiag(β, α, β) (float64, m × m). reorth="full" projects w against every stored Lanczos vector
of its chain (classical Gram-Schmidt, its inner products summed in float64 over float32 pieces); a
second pass runs only when the first removed most of w (‖w_after‖ < ‖w_before‖/√2, the "twice is enough"
test of Daniel, Gragg, Kaufman & Stewart 1976). A breakdown (β_j ≤ ε^{3/4}·‖T‖, an invariant subspace
found) records β_j = 0 and continues with a fresh random vector orthogonal to the basis; T is then block
diagonal, the first block's Ritz values are eigenvalues of A, and the later blocks get zero quadrature
weight.

The basis [k, m, dim] is stored in the operator's dtype (on `basis_device` if given, e.g. the CPU to
spare GPU memory); α and β accumulate in float64.

A long run can be checkpointed: every `state_every` iterations `on_state` receives the Lanczos state
(CPU tensors, ints and strings only: iterations done, α/β so far, the current and previous vectors,
the stored basis, the running ‖T‖ scale, the breakdown count and generator state, and the problem's
fingerprint), and `lanczos(..., state=...)` continues from it with the same arithmetic, so the result
is bit-identical to an uninterrupted run on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.solvers.linalg import gram, row_dots
from landscape.hessian.solvers.protocol import LinearOperator, complete_norms, draw, over_shards


@dataclass
class LanczosResult:
    """Tridiagonal coefficients per vector: alpha [k, m], beta [k, m−1] (float64); basis [k, m, dim] and the
    final residuals [k, dim] (A Q_m = Q_m T_m + residual e_mᵀ per chain) if kept."""

    alpha: np.ndarray
    beta: np.ndarray
    basis: Tensor | None = None
    breakdowns: int = 0
    residual: Tensor | None = None

    @property
    def vectors(self) -> int:
        return self.alpha.shape[0]

    @property
    def iters(self) -> int:
        return self.alpha.shape[1]

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (nodes) and SLQ weights [k, m]: per vector, T's eigenvalues and the squared first
        components of its eigenvectors (Golub & Meurant's Gauss quadrature)."""
        pairs = [tridiag_to_ritz(a, b) for a, b in zip(self.alpha, self.beta)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def top_ritz(self, count: int) -> tuple[np.ndarray, Tensor, Tensor]:
        """The `count` largest Ritz values over all chains, their vectors U [count, dim] and the products
        A U = θ U + y_m · residual from the Lanczos relation (no matmat). Needs return_basis=True.
        These seed `top_eigenpairs(op, k, init=U.T, init_product=AU.T)`, which checks them."""
        if self.basis is None or self.residual is None:
            raise LandscapeError("top_ritz: run lanczos with return_basis=True")
        cands = []  # (θ, chain, Ritz vector in the chain's Lanczos basis)
        for p, (a, b) in enumerate(zip(self.alpha, self.beta)):
            if a.size == 1:
                theta, Y = a.copy(), np.ones((1, 1))
            else:
                theta, Y = eigh_tridiagonal(a, b)
            cands += [(theta[i], p, Y[:, i]) for i in range(len(theta) - 1, max(-1, len(theta) - 1 - count), -1)]
        cands.sort(key=lambda c: -c[0])
        cands = cands[:count]
        U, AU, values = [], [], []
        for p in sorted({c[1] for c in cands}):
            mine = [c for c in cands if c[1] == p]
            values += [c[0] for c in mine]
            Yp = torch.from_numpy(np.stack([c[2] for c in mine])).to(self.basis)
            th = torch.tensor([c[0] for c in mine], dtype=torch.float64).to(self.basis)
            Up = Yp @ self.basis[p]
            U.append(Up)
            AU.append(th[:, None] * Up + Yp[:, -1:] * self.residual[p].to(self.basis))
        return np.array(values), torch.cat(U), torch.cat(AU)


def tridiag_to_ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of tridiag(beta, alpha, beta) (ascending) and the squared first eigenvector components."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.size == 1:
        return alpha.copy(), np.ones(1)
    nodes, vecs = eigh_tridiagonal(alpha, np.asarray(beta, dtype=np.float64))
    return nodes, vecs[0] ** 2


def rademacher(k: int, dim: int, generator: torch.Generator) -> Tensor:
    """[k, dim] of ±1 (float64, CPU) from `generator` (a sharded operator's part of them: `protocol.draw`)."""
    return draw(lambda n: torch.randint(0, 2, (k, n), generator=generator).to(torch.float64).mul_(2).sub_(1), dim)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """w − B (Bᵀ w) per chain: w [k, dim], basis [k, j, dim] (any device; w returns on its own).

    The coefficients Bᵀw are summed in float64 over float32 pieces (`_linalg.gram`): a plain float32
    sum over 10⁶ entries loses orthogonality at 1e-5. One product pair per chain (k ≤ a few dozen).
    """
    wb = w.to(basis.device, copy=True)
    for p in range(wb.shape[0]):
        c = gram(basis[p], wb[p : p + 1])[:, 0].to(device=wb.device, dtype=wb.dtype)
        wb[p].addmv_(basis[p].T, c, alpha=-1)
    return wb.to(w.device)


def _norms(w: Tensor) -> Tensor:
    return complete_norms(torch.linalg.vector_norm(w, dim=1, dtype=torch.float64))


FINGERPRINT = ("dim", "vectors", "iters", "seed", "reorth", "dtype")
_STATE_KEYS = ("done", "alpha", "beta", "q", "q_prev", "scale", "breakdowns", "rng")


def _check_state(state: dict, fingerprint: dict, keep: bool) -> None:
    """A state must hold every field and match this run's fingerprint (a LandscapeError names the difference)."""
    if not isinstance(state, dict):
        raise LandscapeError(f"lanczos: a state is a dict, got {type(state).__name__}")
    if "vectors" not in state and "probes" in state:  # saved before the rename of probes to vectors
        state = {**state, "vectors": state["probes"]}
    missing = [k for k in (*FINGERPRINT, *_STATE_KEYS, *(("basis",) if keep else ())) if k not in state]
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


@over_shards
def lanczos(
    matmat: Callable[[Tensor], Tensor] | LinearOperator,
    dim: int | None = None,
    iters: int = 80,
    vectors: int = 1,
    seed: int = 0,
    *,
    reorth: str = "full",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    start: Tensor | None = None,
    basis_device: torch.device | str | None = None,
    return_basis: bool = False,
    callback: Callable[[int], None] | None = None,
    state: dict | None = None,
    on_state: Callable[[dict], None] | None = None,
    state_every: int = 10,
) -> LanczosResult:
    """Run `iters` Lanczos steps for `vectors` random start vectors at once (one matmat per step).

    matmat: a callable [dim, k] → [dim, k], or an operator with `.matmat`, `.dim`, `.dtype`, `.device`
    (which then supply the defaults of dim, dtype and device). start: optional [dim, k] start vectors.
    callback(j) runs after iteration j (j = 1..iters), e.g. to advance a progress bar.
    on_state(state) runs after every `state_every`-th iteration but the last, with a fresh dict of CPU
    tensors, ints and strings (fit for `torch.save` / `torch.load(weights_only=True)`); `state` resumes
    from such a dict (start is then ignored). Its fingerprint (dim, vectors, iters, seed, reorth, dtype)
    must match this run's.
    """
    if hasattr(matmat, "matmat"):
        op = matmat
        dim = op.dim if dim is None else dim
        dtype = dtype or op.dtype
        device = device or op.device
        matmat = op.matmat
    if dim is None:
        raise LandscapeError("lanczos: dim is required when matmat is a plain callable")
    dtype = dtype or torch.float32
    device = torch.device(device or "cpu")
    if reorth not in ("full", "none"):
        raise LandscapeError(f"lanczos: reorth must be 'full' or 'none', got {reorth!r}")
    if iters < 1:
        raise LandscapeError(f"lanczos: iters must be at least 1, got {iters}")
    if iters > dim:
        raise LandscapeError(f"lanczos: iters ({iters}) cannot exceed the dimension ({dim})")
    if state_every < 1:
        raise LandscapeError(f"lanczos: state_every must be at least 1, got {state_every}")
    gen = torch.Generator().manual_seed(seed)
    if start is None:
        if vectors < 1:
            raise LandscapeError(f"lanczos: vectors must be at least 1, got {vectors}")
        q = rademacher(vectors, dim, gen)
    else:
        q = torch.as_tensor(start).to(torch.float64).cpu().reshape(dim, -1).T
        vectors = q.shape[0]
    keep = reorth == "full" or return_basis
    fingerprint = {"dim": int(dim), "vectors": int(vectors), "iters": int(iters), "seed": int(seed)}
    fingerprint.update(reorth=reorth, dtype=str(dtype).removeprefix("torch."))
    bdev = torch.device(basis_device) if basis_device is not None else device
    basis = torch.empty(vectors, iters, dim, dtype=dtype, device=bdev) if keep else None
    tiny = torch.finfo(dtype).eps ** 0.75
    if state is None:
        q = (q / _norms(q)[:, None]).to(device=device, dtype=dtype)
        alphas, betas = [], []
        q_prev, beta_prev = None, None
        scale = torch.zeros(vectors, dtype=torch.float64, device=device)
        breakdowns, first = 0, 0
    else:
        _check_state(state, fingerprint, keep)
        first = int(state["done"])
        alphas = list(state["alpha"].to(device).unbind(1))
        betas = list(state["beta"].to(device).unbind(1))
        q, q_prev = state["q"].to(device=device, dtype=dtype), state["q_prev"].to(device=device, dtype=dtype)
        beta_prev = betas[-1]
        scale = state["scale"].to(device)
        breakdowns = int(state["breakdowns"])
        gen.set_state(state["rng"])
        if keep:
            basis[:, :first] = state["basis"].to(device=bdev, dtype=dtype)
    for j in range(first, iters):
        if keep:
            basis[:, j] = q.to(bdev)
        w = torch.as_tensor(matmat(q.T)).to(device=device, dtype=dtype).T.contiguous()
        alpha = row_dots(q, w)
        w -= alpha.to(dtype)[:, None] * q
        if q_prev is not None:
            w -= beta_prev.to(dtype)[:, None] * q_prev
        if reorth == "full":
            before = _norms(w)
            w = _orthogonalize(w, basis[:, : j + 1])
            if bool((_norms(w) < before / 2**0.5).any()):
                w = _orthogonalize(w, basis[:, : j + 1])
        beta = _norms(w)
        alphas.append(alpha)
        if callback is not None:
            callback(j + 1)
        if j + 1 == iters:
            break
        scale = torch.maximum(scale, alpha.abs() + beta + (beta_prev if beta_prev is not None else 0))
        broken = beta <= tiny * scale
        if bool(broken.any()):
            breakdowns += int(broken.sum())
            fresh = rademacher(vectors, dim, gen).to(device=device, dtype=dtype)
            if keep:
                for _ in range(2):
                    fresh = _orthogonalize(fresh, basis[:, : j + 1])
            else:
                for v in (q, q_prev) if q_prev is not None else (q,):
                    fresh -= row_dots(fresh, v).to(fresh.dtype)[:, None] * v
            w = torch.where(broken[:, None], fresh / _norms(fresh).to(dtype)[:, None], w)
            beta = torch.where(broken, torch.zeros_like(beta), beta)
        betas.append(beta)
        q_prev, q = q, w / torch.where(beta > 0, beta, torch.ones_like(beta)).to(dtype)[:, None]
        beta_prev = beta
        if on_state is not None and (j + 1) % state_every == 0:
            on_state(
                {
                    **fingerprint,
                    "done": j + 1,
                    "alpha": torch.stack(alphas, 1).cpu(),
                    "beta": torch.stack(betas, 1).cpu(),
                    "q": q.to("cpu", copy=True),
                    "q_prev": q_prev.to("cpu", copy=True),
                    "scale": scale.to("cpu", copy=True),
                    "breakdowns": breakdowns,
                    "rng": gen.get_state(),
                    **({"basis": basis[:, : j + 1].to("cpu", copy=True)} if keep else {}),
                }
            )
    alpha_np = torch.stack(alphas, 1).cpu().numpy()
    beta_np = torch.stack(betas, 1).cpu().numpy() if betas else np.zeros((vectors, 0))
    residual = w if return_basis and keep else None
    return LanczosResult(alpha_np, beta_np, basis if return_basis else None, breakdowns, residual)
