"""Extreme eigenpairs of a symmetric operator: thick-restart block Lanczos in Rayleigh-Ritz form.

The search basis Q (orthonormal rows, m × dim) is stored with A·Q, so the projected matrix
H = Q (AQ)ᵀ (m × m, float64) is exact, not a three-term recurrence that drifts in float32. Each round:

    θ, Y = eigh(H);   U = Yᵀ Q,   AU = Yᵀ (AQ),   R = AU − θ U,   ‖r_i‖ ≥ min_j |θ_i − λ_j|

The next block is the residuals of the wanted pairs that have not converged, at most `block_size`
(converged pairs are locked: kept in the basis, never expanded again). Residuals of Ritz pairs of a block Krylov space
span the space block Lanczos would add next, so this is block Lanczos with full reorthogonalization.
The block is orthogonalized against Q by iterated classical Gram-Schmidt, as matmuls: another pass
whenever the last one removed more than 1 − 1/√2 of the norm (Kahan-Parlett "twice is enough"),
then Cholesky QR twice inside the block; a direction that vanishes (already in
the span) is replaced by a random one. When the basis is full it restarts from the best Ritz vectors
(Q ← YᵀQ, AQ ← Yᵀ(AQ); Wu & Simon 2000 thick restart, block form as in Zhou & Saad 2008).
Gram products over dim are summed in float64 over float32 pieces of 1024 terms, so H and the
orthogonality hold to ~1e-8 at 10⁷ dims (a plain float32 dot product there is off by ~1e-3).
Bookkeeping per round is a few dim × m × block matmuls.

Stops when every wanted pair has ‖r‖ ≤ tol·max|θ| (|θ − λ| ≤ ‖r‖ for symmetric A). Warm starts:
`init` ([dim, j] vectors, e.g. the previous step's eigenvectors during training) seed the basis;
`init_product` (A·init, e.g. from the Lanczos relation of an SLQ run) skips their product: one
Rayleigh-Ritz step on them, then the best k Ritz vectors get real products, which both verify them
and restart the iteration from them if they are not yet converged (docs/methods.md §E.2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.solvers.linalg import gram, row_dots
from landscape.hessian.solvers.linalg import row_norms as _norms
from landscape.hessian.solvers.protocol import LinearOperator, check_operator, draw, full_dim, over_shards

WHICH = ("LA", "SA", "LM")


@dataclass
class Eigenpairs:
    """eigenvalues [k] (float64, in `which` order), eigenvectors [dim, k] (unit), residual norms
    ‖A v − λ v‖ [k], converged (every pair within tol), products (matrix-vector products used),
    matmats (calls of `matmat`), seconds (wall) and matmat_seconds (inside `matmat`)."""

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray
    converged: bool
    n_products: int
    matmats: int = 0
    tol: float = float("nan")
    seconds: float = 0.0
    matmat_seconds: float = 0.0

    @property
    def relative_residuals(self) -> np.ndarray:
        """‖A v − λ v‖ / max|λ| per pair."""
        return self.residuals / max(float(np.abs(self.eigenvalues).max()), np.finfo(np.float64).tiny)

    def to_dict(self) -> dict:
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged,
            "n_products": self.n_products,
            "matmats": self.matmats,
            "tol": self.tol,
        }


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    key = {"LA": -theta, "SA": theta, "LM": -np.abs(theta)}[which]
    return np.argsort(key, kind="stable")


def _chol_qr_(X: Tensor, work: Tensor) -> np.ndarray:
    """Cholesky QR of the rows of X in place (X ← L⁻¹X, via `work` of X's shape), the Gram matrix in
    float64; returns diag L. A row's diagonal entry is its norm after projecting out the rows before it,
    so a tiny one marks a dependent row (X is then left as it was and zeros are returned)."""
    G = gram(X, X)
    L, info = torch.linalg.cholesky_ex(G)
    d = L.diagonal().numpy().copy()
    if int(info) != 0 or not np.isfinite(d).all() or (d <= 0).any():
        return np.zeros_like(d)
    Linv = torch.linalg.solve_triangular(L, torch.eye(L.shape[0], dtype=L.dtype), upper=False)
    torch.matmul(Linv.to(device=X.device, dtype=X.dtype), X, out=work)
    X.copy_(work)
    return d


def orthonormalize_(X: Tensor, Q: Tensor, gen: torch.Generator, work: Tensor | None = None) -> Tensor:
    """Rows of X (contiguous, changed in place) made orthonormal and orthogonal to the orthonormal rows of
    Q: iterated classical Gram-Schmidt against Q, then Cholesky QR twice inside the block (all Gram sums
    in float64: a float32 Householder QR at 10⁶ dims is only orthonormal to ~1e-5). Rows that vanish
    (numerically inside the span of Q and the rows before them) are replaced by random ones. `work`: a
    scratch tensor of X's shape (fresh memory costs page faults at 10⁷ dims: reuse it)."""
    dim = X.shape[1]
    if Q.shape[0] + X.shape[0] > dim:
        X = X[: dim - Q.shape[0]]
    work = torch.empty_like(X) if work is None else work[: X.shape[0]]
    eps = torch.finfo(X.dtype).eps
    floor = 100 * eps * max(1, Q.shape[0] + X.shape[0]) ** 0.5
    for _attempt in range(4):
        X.mul_((1 / _norms(X).clamp_min(1e-300)).to(device=X.device, dtype=X.dtype)[:, None])
        before = np.ones(X.shape[0])
        for _pass in range(4):
            if Q.shape[0]:
                X.addmm_(gram(X, Q).to(device=X.device, dtype=X.dtype), Q, alpha=-1)
            after = _norms(X).cpu().numpy()
            if (after >= before / 2**0.5).all():  # Kahan-Parlett: this pass kept most of the norm
                break
            before = after
        d = _chol_qr_(X, work)
        lost = (after < floor) | (d < 1e-3 * np.maximum(after, 1e-300))
        if not lost.any():
            if Q.shape[0] and d.min() < 0.5:  # Cholesky QR amplified what was left of span(Q)
                X.addmm_(gram(X, Q).to(device=X.device, dtype=X.dtype), Q, alpha=-1)
            if X.shape[0] > 1 or d.min() < 0.5:
                _chol_qr_(X, work)
            else:
                X.mul_((1 / _norms(X)).to(device=X.device, dtype=X.dtype)[:, None])
            return X
        X[torch.from_numpy(lost).to(X.device)] = _randn(int(lost.sum()), dim, gen, X.dtype, X.device)
    raise LandscapeError("top_eigenpairs: could not extend the search space (dimension exhausted)")


def orthonormalize(X: Tensor, Q: Tensor, gen: torch.Generator) -> Tensor:
    """`orthonormalize_` on a copy of X."""
    return orthonormalize_(X.clone(memory_format=torch.contiguous_format), Q, gen)


def _randn(n: int, dim: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    """n random rows from the CPU generator (the same on every device), in float32 unless float64 (a sharded
    operator's part of them: `protocol.draw`)."""
    kind = torch.float64 if dtype == torch.float64 else torch.float32
    return draw(lambda m: torch.randn(n, m, generator=gen, dtype=kind), dim).to(device=device, dtype=dtype)


class _Counted:
    """op.matmat on row blocks, counting calls, columns and seconds."""

    def __init__(self, op: LinearOperator):
        self.op, self.calls, self.products, self.seconds = op, 0, 0, 0.0

    def __call__(self, X: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = torch.as_tensor(self.op.matmat(X.T)).to(device=X.device, dtype=X.dtype).T.contiguous()
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.products += X.shape[0]
        return out


def _start(
    init: Tensor | None, init_product: Tensor | None, b: int, dim: int, dtype, device, gen, mm: _Counted
) -> tuple[Tensor, Tensor]:
    """The first basis block and its product: orthonormalized `init` (padded with random rows to b
    when its product must be computed anyway), or b random rows."""
    if init_product is not None:
        V = torch.as_tensor(init).to(device=device, dtype=dtype).reshape(dim, -1).T
        AV = torch.as_tensor(init_product).to(device=device, dtype=dtype).reshape(dim, -1).T
        if AV.shape != V.shape:
            raise LandscapeError(f"top_eigenpairs: init_product {tuple(AV.shape)} must match init {tuple(V.shape)}")
        # symmetric orthonormalization M V (M = G^-1/2 on the well-conditioned part): A(MV) = M(AV)
        g, W = torch.linalg.eigh(gram(V, V))
        keep = g > 1e-6 * g.max()
        M = (W[:, keep] / g[keep].sqrt()).T.to(device=device, dtype=dtype)
        return M @ V, M @ AV
    rows = _randn(b, dim, gen, dtype, device)
    if init is not None:
        V = torch.as_tensor(init).to(device=device, dtype=dtype).reshape(dim, -1).T
        rows = torch.cat([V, rows[: max(0, b - V.shape[0])]])
    Q = orthonormalize(rows, rows[:0], gen)
    return Q, mm(Q)


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
    """The k extreme eigenpairs of a symmetric operator (dim, dtype, device, matmat: see protocol).

    which: "LA" largest, "SA" smallest (algebraic), "LM" largest magnitude.
    tol: residual ‖Av − θv‖ ≤ tol·max|θ| (default 1e-6 in float64, 1e-4 in lower precision).
    block_size: vectors per matmat (default min(k, 4)); max_basis: basis size before a thick
    restart (default max(2k + 2·block, 20)); max_matmats: calls of matmat before giving up.
    init: [dim, j] start vectors (warm start, e.g. last step's eigenvectors); init_product: A·init
    if already known (e.g. SLQ's Lanczos relation, see spectrum.slq_density(top_k=...)), saving
    that product: after one Rayleigh-Ritz step on them the best k Ritz vectors get real products,
    which verify them or restart the iteration from them.
    """
    check_operator(op, "top_eigenpairs")
    if which not in WHICH:
        raise LandscapeError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    dim, dtype, device = int(op.dim), op.dtype, torch.device(op.device)
    size = full_dim(op)  # the matrix size (dim is the length of this process's part of a sharded vector)
    if not 1 <= k <= size:
        raise LandscapeError(f"top_eigenpairs: k must be in 1..{size}, got {k}")
    if init_product is not None and init is None:
        raise LandscapeError("top_eigenpairs: init_product needs init")
    tol = tol if tol is not None else (1e-6 if dtype == torch.float64 else 1e-4)
    b = max(1, min(size, block_size or min(k, 4)))
    m_max = min(size, max_basis or max(2 * k + 2 * b, 20))
    if m_max < min(size, k + b):
        raise LandscapeError(f"top_eigenpairs: max_basis must be at least k + block_size = {k + b}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    mm = _Counted(op)
    Q0, AQ0 = _start(init, init_product, b, dim, dtype, device, gen, mm)
    trusted = init_product is None
    cap = max(m_max, Q0.shape[0] + b, k + b)
    # every big buffer is allocated once: at 10⁷ dims fresh memory costs more in page faults than the
    # arithmetic done in it
    Q = torch.empty(cap, dim, dtype=dtype, device=device)
    AQ = torch.empty_like(Q)
    Rbuf = torch.empty(k, dim, dtype=dtype, device=device)
    work = torch.empty(k + b, dim, dtype=dtype, device=device)
    m = Q0.shape[0]
    Q[:m], AQ[:m] = Q0, AQ0
    del Q0, AQ0
    H = gram(Q[:m], AQ[:m]).numpy()
    while True:
        theta, Y = np.linalg.eigh((H + H.T) / 2)
        order = _order(theta, which)
        p = min(m, k)
        Yp = torch.from_numpy(np.ascontiguousarray(Y[:, order[:p]].T)).to(device=device, dtype=dtype)
        th = theta[order[:p]]
        thY = torch.from_numpy(th).to(device=device, dtype=dtype)[:, None] * Yp
        R = torch.matmul(Yp, AQ[:m], out=Rbuf[:p])
        R.addmm_(thY, Q[:m], alpha=-1)  # (AQ − θQ)ᵀy without forming U
        res = _norms(R).cpu().numpy()
        limit = tol * max(float(np.abs(theta).max()), np.finfo(np.float64).tiny)
        done = res <= limit
        full = m >= size
        if not trusted or (p == k and done.all()) or full or mm.calls >= max_matmats:
            U = Yp @ Q[:m]
            if trusted or mm.calls >= max_matmats:
                break
            # the products came from init_product: the best k Ritz vectors get real ones, and the
            # iteration continues from them (or stops if they are converged)
            trusted = True
            U = orthonormalize(U, U[:0], gen)  # a basis built from init is orthonormal only to ~1e-4
            AU = mm(U)
            th = row_dots(U, AU).cpu().numpy()
            R = AU - torch.from_numpy(th).to(device=device, dtype=dtype)[:, None] * U
            res = _norms(R).cpu().numpy()
            done = res <= limit
            if (p == k and done.all()) or mm.calls >= max_matmats:
                break
            m = p
            Q[:m], AQ[:m] = U, AU
            H = gram(Q[:m], AQ[:m]).numpy()
            continue
        pick = np.flatnonzero(~done)[:b]
        if m + len(pick) > m_max:
            keep = max(p, min(m_max - b, m_max // 2 + k))
            Yk = torch.from_numpy(np.ascontiguousarray(Y[:, order[:keep]].T)).to(device=device, dtype=dtype)
            tmp = Yk @ Q[:m]
            Q[:keep] = tmp
            AQ[:keep] = torch.matmul(Yk, AQ[:m], out=tmp)
            del tmp
            m = keep
            H = np.diag(theta[order[:keep]])
        n = len(pick) + max(0, k - m)  # a warm start with fewer than k directions: add random ones
        X = Q[m : m + n]
        torch.index_select(R, 0, torch.from_numpy(pick).to(device), out=X[: len(pick)])
        if n > len(pick):
            X[len(pick) :] = _randn(n - len(pick), dim, gen, dtype, device)
        X = orthonormalize_(X, Q[:m], gen, work)
        n = X.shape[0]
        AQ[m : m + n] = mm(X)
        C = gram(Q[: m + n], AQ[m : m + n]).numpy()  # [m + n, n]
        H2 = np.zeros((m + n, m + n))
        H2[:m, :m] = H
        H2[:, m:] = C
        H2[m:, :m] = C[:m].T
        H = H2
        m += n
    return Eigenpairs(
        eigenvalues=th[:k].copy(),
        eigenvectors=U[:k].T,
        residuals=res[:k].copy(),
        converged=bool(len(done) == k and done.all()),
        n_products=mm.products,
        matmats=mm.calls,
        tol=tol,
        seconds=time.perf_counter() - t0,
        matmat_seconds=mm.seconds,
    )
