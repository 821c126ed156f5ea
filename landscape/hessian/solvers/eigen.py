"""Extreme eigenpairs of a symmetric operator: thick-restart block Lanczos in Rayleigh-Ritz form.

The search basis Q (orthonormal rows, m × dim) is stored with A·Q, so the projected matrix
H = Q (AQ)ᵀ (m × m, float64) is exact, not a three-term recurrence that drifts in float32. Each round:

    θ, Y = eigh(H);   U = Yᵀ Q,   AU = Yᵀ (AQ),   R = AU − θ U,   ‖r_i‖ ≥ min_j |θ_i − λ_j|

The next block is the residuals of the wanted pairs that have not converged, at most `block_size`
(converged pairs are locked: kept in the basis, never expanded again). Residuals of Ritz pairs of a block
Krylov space span the space block Lanczos would add next, so this is block Lanczos with full
reorthogonalization. The block is orthogonalized against Q by iterated classical Gram-Schmidt and Cholesky
QR (linalg.orthonormalize_). When the basis is full it restarts from the best Ritz vectors (Q ← YᵀQ,
AQ ← Yᵀ(AQ); Wu & Simon 2000 thick restart, block form as in Zhou & Saad 2008). Gram products over dim are
summed in float64 over float32 pieces, so H and the orthogonality hold to ~1e-8 at 10⁷ dims.

Memory: (3m + 2k + 3b) · P numbers of the working dtype (P = dim, m = max_basis, b = block_size): Q and AQ,
the restart's copy, residuals, scratch and one product block. m defaults to max(2k + 2b, 20), lowered to what
`memory.budget(device, memory.BASIS_SHARE)` holds, never below k + b; no iteration count enters.

Precision: a bfloat16/float16 operator gets float32 vectors (protocol.apply casts each block), and the
default tolerance is 8u of its dtype (u = 2^−8 for bf16): its products carry a relative error ~u, so a
residual much below u·‖A‖ cannot be certified.

Stops when every wanted pair has ‖r_i‖ ≤ tol·max(|θ_i|, SMALL·max|θ|) (|θ − λ| ≤ ‖r‖ for symmetric A): each
pair relative to its own value, as ARPACK does, with a floor at SMALL = 1e-3 of the basis' spectral scale for
values near 0. A test relative to max|θ| alone accepted a near-null Ritz value as the converged largest one
when a large negative eigenvalue set the scale (GPT-2-small early in training: λmin ≈ −6·λmax): the residual
only certifies that *an* eigenvalue lies near θ, not that it is the largest. Warm starts:
`init` ([dim, j] vectors, e.g. the previous step's eigenvectors during training) seed the basis;
`init_product` (A·init, e.g. from the Lanczos relation of an SLQ run) skips their product: one
Rayleigh-Ritz step on them, then the best k Ritz vectors get real products, which both verify them
and restart the iteration from them if they are not yet converged (docs/methods.md §E.2).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from landscape import memory
from landscape.errors import LandscapeError
from landscape.hessian.solvers.linalg import gram, orthonormalize, orthonormalize_, random_rows, row_dots
from landscape.hessian.solvers.linalg import row_norms as _norms
from landscape.hessian.solvers.protocol import (
    LinearOperator,
    apply,
    check_operator,
    full_dim,
    over_shards,
    unit_roundoff,
    working_dtype,
)

WHICH = ("LA", "SA", "LM")


@dataclass
class Eigenpairs:
    """The result of `top_eigenpairs`.

    Attributes:
        eigenvalues: [k] float64, in `which` order.
        eigenvectors: [dim, k] unit columns (working dtype).
        residuals: [k] ‖A v − λ v‖, each bounding its eigenvalue's error.
        converged: every pair within tol.
        n_products: matrix-vector products used.
        matmats: calls of `matmat`.
        tol: the relative residual tolerance.
        seconds: wall time.
        matmat_seconds: time inside `matmat`.
        max_basis: the basis size m the solve used (memory (3m + 2k + 3b)·P numbers).
        memory_bytes: that formula's bytes.
    """

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray
    converged: bool
    n_products: int
    matmats: int = 0
    tol: float = float("nan")
    seconds: float = 0.0
    matmat_seconds: float = 0.0
    max_basis: int = 0
    memory_bytes: int = 0

    @property
    def relative_residuals(self) -> np.ndarray:
        """‖A v − λ v‖ / max|λ| per pair."""
        return self.residuals / max(float(np.abs(self.eigenvalues).max()), np.finfo(np.float64).tiny)

    def to_dict(self) -> dict:
        """The numbers as JSON-able values.

        Returns:
            Everything but the eigenvectors and timings.
        """
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged,
            "n_products": self.n_products,
            "matmats": self.matmats,
            "tol": self.tol,
            "max_basis": self.max_basis,
            "memory_bytes": self.memory_bytes,
        }


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    key = {"LA": -theta, "SA": theta, "LM": -np.abs(theta)}[which]
    return np.argsort(key, kind="stable")


class _Counted:
    """A applied to row blocks (protocol.apply), counting calls, columns and seconds."""

    def __init__(self, op: LinearOperator):
        self.op, self.calls, self.products, self.seconds = op, 0, 0, 0.0

    def __call__(self, X: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = apply(self.op, X)
        if not bool(torch.isfinite(out).all()):
            raise LandscapeError(f"top_eigenpairs: the operator returned non-finite products (dtype {self.op.dtype})")
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.products += X.shape[0]
        return out


def _start(init: Tensor | None, init_product: Tensor | None, b: int, dim: int, dtype, device, gen,
           mm: _Counted) -> tuple[Tensor, Tensor]:
    """The first basis block and its product: orthonormalized `init` (padded with random rows to b
    when its product must be computed anyway), or b random rows."""
    if init_product is not None:
        V = torch.as_tensor(init).to(device=device, dtype=dtype).reshape(dim, -1).T
        AV = torch.as_tensor(init_product).to(device=device, dtype=dtype).reshape(dim, -1).T
        if AV.shape != V.shape:
            raise LandscapeError(f"top_eigenpairs: init_product {tuple(AV.shape)} must match init {tuple(V.shape)}")
        # symmetric orthonormalization M V (M = G^-1/2 on the well-conditioned part): A(MV) = M(AV); directions
        # below the products' own rounding (1e-6, or u of a bf16/fp16 operator) are duplicates
        g, W = torch.linalg.eigh(gram(V, V))
        keep = g > max(1e-6, unit_roundoff(mm.op.dtype)) * g.max()
        M = (W[:, keep] / g[keep].sqrt()).T.to(device=device, dtype=dtype)
        return M @ V, M @ AV
    rows = random_rows(b, dim, gen, dtype, device)
    if init is not None:
        V = torch.as_tensor(init).to(device=device, dtype=dtype).reshape(dim, -1).T
        rows = torch.cat([V, rows[: max(0, b - V.shape[0])]])
    Q = orthonormalize(rows, rows[:0], gen)
    return Q, mm(Q)


SMALL = 1e-3
"""Below SMALL·max|θ| a Ritz value's residual is judged against that floor instead of its own magnitude."""


def basis_size(op: LinearOperator, k: int, b: int, max_basis: int | None) -> tuple[int, int]:
    """The basis size m and the memory formula's bytes (module docstring).

    Args:
        op: the operator.
        k: wanted pairs.
        b: block size.
        max_basis: the caller's m, or None for the default held by the memory budget.

    Returns:
        (m, (3m + 2k + 3b)·P·e bytes).

    Raises:
        LandscapeError: when not even the free memory holds the smallest basis, k + b (a budget that holds less
            than that but free memory that does runs at k + b with a warning).
    """
    dim = int(op.dim)
    e = torch.empty((), dtype=working_dtype(op.dtype)).element_size()
    least = min(dim, k + b)
    if max_basis is None:
        budget = memory.budget(torch.device(op.device), memory.BASIS_SHARE)
        fit = (budget // (dim * e) - 2 * k - 3 * b) // 3
        if fit < least:
            need, free = (3 * least + 2 * k + 3 * b) * dim * e, memory.available_bytes(torch.device(op.device))
            if need > free:
                raise LandscapeError(f"top_eigenpairs: k={k} with blocks of {b} needs at least {need / 2**30:.2f} GiB "
                                     f"((3(k + b) + 2k + 3b) vectors of {dim} numbers); {free / 2**30:.2f} GiB is "
                                     "free: free memory, or lower k or block_size")
            warnings.warn(f"top_eigenpairs: the memory budget ({budget / 2**30:.2f} GiB) holds less than the smallest "
                          f"basis; running with max_basis = k + block_size = {least} in {need / 2**30:.2f} GiB of "
                          f"{free / 2**30:.2f} GiB free", stacklevel=3)
            fit = least
        max_basis = min(max(2 * k + 2 * b, 20), fit)
    m = min(dim, max_basis)
    return m, (3 * m + 2 * k + 3 * b) * dim * e


class _Search:
    """The basis Q, its products AQ and the projected matrix H = Q AQᵀ, in buffers allocated once (at 10⁷
    dims fresh memory costs more in page faults than the arithmetic done in it)."""

    def __init__(self, Q0: Tensor, AQ0: Tensor, cap: int, k: int, b: int, gen: torch.Generator, mm: _Counted):
        dim, self.k, self.gen, self.mm = Q0.shape[1], k, gen, mm
        self.Q = Q0.new_empty(cap, dim)
        self.AQ = torch.empty_like(self.Q)
        self.R = Q0.new_empty(k, dim)
        self.work = Q0.new_empty(k + b, dim)
        self.m = Q0.shape[0]
        self.Q[: self.m], self.AQ[: self.m] = Q0, AQ0
        self.H = gram(self.Q[: self.m], self.AQ[: self.m]).numpy()

    def ritz(self, which: str) -> tuple:
        """(θ ascending, Y, order, p, Y_p rows, θ_p, R_p, ‖R_p‖) of the best p = min(m, k) Ritz pairs."""
        m = self.m
        theta, Y = np.linalg.eigh((self.H + self.H.T) / 2)
        order = _order(theta, which)
        p = min(m, self.k)
        Yp = torch.from_numpy(np.ascontiguousarray(Y[:, order[:p]].T)).to(self.Q)
        th = theta[order[:p]]
        R = torch.matmul(Yp, self.AQ[:m], out=self.R[:p])
        R.addmm_(torch.from_numpy(th).to(self.Q)[:, None] * Yp, self.Q[:m], alpha=-1)  # (AQ − θQ)ᵀy
        return theta, Y, order, p, Yp, th, R, _norms(R).cpu().numpy()

    def reset(self, U: Tensor, AU: Tensor) -> None:
        """Restart from U (orthonormal) with products AU."""
        self.m = U.shape[0]
        self.Q[: self.m], self.AQ[: self.m] = U, AU
        self.H = gram(self.Q[: self.m], self.AQ[: self.m]).numpy()

    def restart(self, Y: np.ndarray, order: np.ndarray, theta: np.ndarray, keep: int) -> None:
        """Thick restart: Q ← YᵀQ and AQ ← Yᵀ(AQ) for the best `keep` Ritz vectors; H becomes diag(θ)."""
        Yk = torch.from_numpy(np.ascontiguousarray(Y[:, order[:keep]].T)).to(self.Q)
        tmp = Yk @ self.Q[: self.m]
        self.Q[:keep] = tmp
        self.AQ[:keep] = torch.matmul(Yk, self.AQ[: self.m], out=tmp)
        del tmp
        self.m = keep
        self.H = np.diag(theta[order[:keep]])

    def expand(self, R: Tensor, pick: np.ndarray, extra: int) -> None:
        """Add the residuals R[pick] (plus `extra` random rows), orthonormalized against Q, and their products."""
        m, n = self.m, len(pick) + extra
        X = self.Q[m : m + n]
        torch.index_select(R, 0, torch.from_numpy(pick).to(R.device), out=X[: len(pick)])
        if extra:
            X[len(pick) :] = random_rows(extra, X.shape[1], self.gen, X.dtype, X.device)
        X = orthonormalize_(X, self.Q[:m], self.gen, self.work)
        n = X.shape[0]
        self.AQ[m : m + n] = self.mm(X)
        C = gram(self.Q[: m + n], self.AQ[m : m + n]).numpy()  # [m + n, n]
        H2 = np.zeros((m + n, m + n))
        H2[:m, :m] = self.H
        H2[:, m:] = C
        H2[m:, :m] = C[:m].T
        self.H, self.m = H2, m + n


def _verify(search: _Search, U: Tensor, gen: torch.Generator, limit: np.ndarray) -> tuple:
    """Real products for Ritz vectors built from an untrusted init_product: (U, θ, residual norms, done)."""
    U = orthonormalize(U, U[:0], gen)  # a basis built from init is orthonormal only to ~1e-4
    AU = search.mm(U)
    th = row_dots(U, AU).numpy()
    R = AU - torch.from_numpy(th).to(AU)[:, None] * U
    res = _norms(R).cpu().numpy()
    search.reset(U, AU)
    return U, th, res, res <= limit


@over_shards
def top_eigenpairs(
    op: LinearOperator,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_matmats: int = 500,
    seed: int = 0,
    init: Tensor | None = None,
    init_product: Tensor | None = None,
) -> Eigenpairs:
    """The k extreme eigenpairs of a symmetric operator, to ‖A v − θ v‖ ≤ tol·max|θ| (module docstring).

    Memory (3m + 2k + 3b)·P numbers (m = max_basis, b = block_size, P = dim), whatever the iteration count.

    Args:
        op: the operator (dim, dtype, device, matmat: see protocol).
        k: how many pairs.
        which: "LA" largest, "SA" smallest (algebraic), "LM" largest magnitude.
        tol: relative residual tolerance (default 1e-6 in float64, 1e-4 in float32, 8u in bf16/fp16).
        block_size: vectors per matmat (default min(k, 4)).
        max_basis: basis size before a thick restart (default max(2k + 2·block, 20), lowered to fit
            `memory.budget(device, memory.BASIS_SHARE)`).
        max_matmats: calls of matmat before giving up.
        seed: seed of the random start and replacement vectors.
        init: [dim, j] start vectors (warm start, e.g. the last step's eigenvectors).
        init_product: A·init if already known (e.g. SLQ's Lanczos relation), saving that product: after one
            Rayleigh-Ritz step the best k Ritz vectors get real products, which verify them or restart the
            iteration from them.

    Returns:
        `Eigenpairs` (their `.converged` says whether every pair met tol).
    """
    check_operator(op, "top_eigenpairs")
    if which not in WHICH:
        raise LandscapeError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    dim, device, wd = int(op.dim), torch.device(op.device), working_dtype(op.dtype)
    size = full_dim(op)  # the matrix size (dim is the length of this process's part of a sharded vector)
    if not 1 <= k <= size:
        raise LandscapeError(f"top_eigenpairs: k must be in 1..{size}, got {k}")
    if init_product is not None and init is None:
        raise LandscapeError("top_eigenpairs: init_product needs init")
    if tol is None:
        tol = {torch.float64: 1e-6, torch.float32: 1e-4}.get(op.dtype, 8 * unit_roundoff(op.dtype))
    b = max(1, min(size, block_size or min(k, 4)))
    m_max, nbytes = basis_size(op, k, b, max_basis)
    if m_max < min(size, k + b):
        raise LandscapeError(f"top_eigenpairs: max_basis must be at least k + block_size = {k + b}")
    t0, gen, mm = time.perf_counter(), torch.Generator().manual_seed(seed), _Counted(op)
    Q0, AQ0 = _start(init, init_product, b, dim, wd, device, gen, mm)
    search = _Search(Q0, AQ0, max(m_max, Q0.shape[0] + b, k + b), k, b, gen, mm)
    del Q0, AQ0
    trusted = init_product is None
    while True:
        theta, Y, order, p, Yp, th, R, res = search.ritz(which)
        scale = max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
        limit = tol * np.maximum(np.abs(th), SMALL * scale)
        done = res <= limit
        if not trusted or (p == k and done.all()) or search.m >= size or mm.calls >= max_matmats:
            U = Yp @ search.Q[: search.m]
            if trusted or mm.calls >= max_matmats:
                break
            trusted = True  # the products came from init_product: the best k Ritz vectors get real ones
            U, th, res, done = _verify(search, U, gen, limit)
            if (p == k and done.all()) or mm.calls >= max_matmats:
                break
            continue
        pick = np.flatnonzero(~done)[:b]
        if search.m + len(pick) > m_max:
            search.restart(Y, order, theta, max(p, min(m_max - b, m_max // 2 + k)))
        search.expand(R, pick, max(0, k - search.m))  # a warm start with fewer than k directions: random ones
    return Eigenpairs(
        eigenvalues=th[:k].copy(), eigenvectors=U[:k].T, residuals=res[:k].copy(),
        converged=bool(len(done) == k and done.all()), n_products=mm.products, matmats=mm.calls, tol=tol,
        seconds=time.perf_counter() - t0, matmat_seconds=mm.seconds, max_basis=m_max, memory_bytes=nbytes,
    )
