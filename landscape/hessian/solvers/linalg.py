"""Inner products of long vectors that stay accurate, and the orthonormalization built on them.

A plain float32 dot product of two unit vectors with 10⁷ entries is off by ~1e-3 (measured: the running
sum's rounding grows with its length); summing 1024-term pieces in float64 brings it to ~1e-9 at the speed
of one float32 matmul (a batched matmul over the pieces, no float64 copy of the data). Every Gram matrix,
norm and Gram-Schmidt coefficient of the solvers goes through `gram` / `row_norms`; on a sharded operator's
vectors (`protocol.Sharding`) their float64 sums are completed across processes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.solvers.protocol import complete, complete_norms, draw

_CHUNK = 1024
_SPAN = 1 << 16


def gram(A: Tensor, B: Tensor) -> Tensor:
    """A Bᵀ summed in float64: Σ_d A[i, d] B[j, d] over float32 pieces of 1024 terms added in float64.

    Args:
        A: rows [a, dim].
        B: rows [b, dim], same dtype and device.

    Returns:
        [a, b] float64 on the CPU (accurate to ~1e-9 relative at 10⁷ dims in float32).
    """
    if A.dtype == torch.float64 or A.shape[1] <= _CHUNK:
        return complete((A @ B.T).double().cpu())
    A, B = A.contiguous(), B.contiguous()
    n = A.shape[1] // _CHUNK * _CHUNK
    Av = A[:, :n].view(A.shape[0], -1, _CHUNK).transpose(0, 1)
    Bv = B[:, :n].view(B.shape[0], -1, _CHUNK).transpose(0, 1)
    out = torch.bmm(Av, Bv.transpose(1, 2)).double().sum(0)
    if n < A.shape[1]:
        out += (A[:, n:] @ B[:, n:].T).double()
    return complete(out.cpu())


def row_norms(X: Tensor, scratch: Tensor | None = None) -> Tensor:
    """‖x_i‖ for each row, its squares summed in float64 over spans of 2¹⁶ entries copied to one float64 buffer.

    Float32 norms of 1024-term pieces are off by ~1e-7 relative, which in Lanczos compounds through the
    normalization of every vector (α off by 1e-4 at λmax = 130 after one step); this is exact to float64
    rounding, with a scratch of k × 2¹⁶ float64 numbers.

    Args:
        X: rows [k, dim].
        scratch: a float64 buffer of at least [k, 2¹⁶] on X's device to reuse (a loop that calls this every
            step keeps the allocator from fragmenting its heap around a fresh one).

    Returns:
        [k] float64 on X's device.
    """
    if X.dtype == torch.float64:
        return complete_norms(torch.linalg.vector_norm(X, dim=1))
    n = X.shape[1]
    buf = scratch if scratch is not None else torch.empty(X.shape[0], min(_SPAN, n), dtype=torch.float64,
                                                          device=X.device)
    sq = torch.zeros(X.shape[0], dtype=torch.float64, device=X.device)
    for s in range(0, n, _SPAN):
        b = buf[: X.shape[0], : min(n, s + _SPAN) - s]
        sq += b.copy_(X[:, s : s + _SPAN]).square_().sum(1)
    return complete(sq).sqrt()


def norm_scratch(k: int, dim: int, device: torch.device) -> Tensor:
    """The float64 buffer `row_norms` reuses for k rows of length dim.

    Args:
        k: rows.
        dim: their length.
        device: where.

    Returns:
        [k, min(dim, 2¹⁶)] float64.
    """
    return torch.empty(k, min(dim, _SPAN), dtype=torch.float64, device=device)


def row_dots(A: Tensor, B: Tensor) -> Tensor:
    """a_iᵀ b_i for each row pair, summed in float64 like `gram` (no product temporary of A's size).

    Args:
        A: rows [k, dim].
        B: rows [k, dim].

    Returns:
        [k] float64 on the CPU.
    """
    return torch.stack([gram(A[p : p + 1], B[p : p + 1])[0, 0] for p in range(A.shape[0])])


def project_out_(w: Tensor, Y: Tensor) -> Tensor:
    """w ← w − Yᵀ(Y w) row by row: each row of w made orthogonal to the orthonormal rows of its own Y.

    Args:
        w: [k, dim], changed in place.
        Y: [k, r, dim] (any device; r may be 0), orthonormal rows per chain.

    Returns:
        w.
    """
    if Y.shape[1] == 0:
        return w
    for p in range(w.shape[0]):
        c = gram(Y[p], w[p : p + 1].to(Y.device))[:, 0].to(device=Y.device, dtype=Y.dtype)
        if Y.device == w.device:
            w[p].addmv_(Y[p].T, c, alpha=-1)
        else:
            w[p].sub_((c @ Y[p]).to(w.device))
    return w


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


def random_rows(n: int, dim: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    """n Gaussian rows drawn from the CPU generator `gen` (the same on every device; a sharded operator's part of
    them, `protocol.draw`).

    Args:
        n: rows.
        dim: their length.
        gen: a CPU generator.
        dtype: float64 draws stay float64; anything else is drawn in float32 and cast.
        device: where the rows go.

    Returns:
        [n, dim].
    """
    kind = torch.float64 if dtype == torch.float64 else torch.float32
    return draw(lambda m: torch.randn(n, m, generator=gen, dtype=kind), dim).to(device=device, dtype=dtype)


def rademacher(k: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> Tensor:
    """k rows of independent ±1 entries.

    Drawn row by row as int8 from the CPU generator (the same stream as one [k, dim] draw, without an int64
    temporary of the whole block); a sharded operator's part of them (`protocol.draw`).

    Args:
        k: rows.
        dim: entries per row.
        generator: a CPU generator.
        dtype: the rows' dtype.
        device: where the rows go.

    Returns:
        [k, dim] of ±1.
    """
    out = torch.empty(k, dim, dtype=dtype, device=device)
    for p in range(k):
        bits = draw(lambda m: torch.randint(0, 2, (1, m), generator=generator, dtype=torch.int8), dim)[0]
        out[p].copy_(bits.mul_(2).sub_(1))
    return out


def _sweep_(X: Tensor, Q: Tensor) -> np.ndarray:
    """Iterated classical Gram-Schmidt of X's rows against Q's: another pass while the last one removed more
    than 1 − 1/√2 of a row's norm (Kahan-Parlett "twice is enough"); returns the final row norms."""
    before = np.ones(X.shape[0])
    for _pass in range(4):
        if Q.shape[0]:
            X.addmm_(gram(X, Q).to(device=X.device, dtype=X.dtype), Q, alpha=-1)
        after = row_norms(X).cpu().numpy()
        if (after >= before / 2**0.5).all():
            break
        before = after
    return after


def orthonormalize_(X: Tensor, Q: Tensor, gen: torch.Generator, work: Tensor | None = None) -> Tensor:
    """Rows of X made orthonormal and orthogonal to the orthonormal rows of Q, in place.

    Iterated classical Gram-Schmidt against Q, then Cholesky QR twice inside the block, every Gram sum in
    float64 (a float32 Householder QR at 10⁶ dims is only orthonormal to ~1e-5). Rows that vanish
    (numerically inside the span of Q and the rows before them) are replaced by random ones.

    Args:
        X: rows [b, dim], contiguous (truncated to dim − len(Q) rows when longer).
        Q: orthonormal rows [m, dim].
        gen: CPU generator for replacement rows.
        work: scratch of X's shape (fresh memory costs page faults at 10⁷ dims: reuse it).

    Returns:
        X (or its leading rows), orthonormal and orthogonal to Q.

    Raises:
        LandscapeError: when four rounds of random replacements still leave a dependent row.
    """
    dim = X.shape[1]
    if Q.shape[0] + X.shape[0] > dim:
        X = X[: dim - Q.shape[0]]
    work = torch.empty_like(X) if work is None else work[: X.shape[0]]
    floor = 100 * torch.finfo(X.dtype).eps * max(1, Q.shape[0] + X.shape[0]) ** 0.5
    for _attempt in range(4):
        X.mul_((1 / row_norms(X).clamp_min(1e-300)).to(device=X.device, dtype=X.dtype)[:, None])
        after = _sweep_(X, Q)
        d = _chol_qr_(X, work)
        lost = (after < floor) | (d < 1e-3 * np.maximum(after, 1e-300))
        if not lost.any():
            if Q.shape[0] and d.min() < 0.5:  # Cholesky QR amplified what was left of span(Q)
                X.addmm_(gram(X, Q).to(device=X.device, dtype=X.dtype), Q, alpha=-1)
            if X.shape[0] > 1 or d.min() < 0.5:
                _chol_qr_(X, work)
            else:
                X.mul_((1 / row_norms(X)).to(device=X.device, dtype=X.dtype)[:, None])
            return X
        X[torch.from_numpy(lost).to(X.device)] = random_rows(int(lost.sum()), dim, gen, X.dtype, X.device)
    raise LandscapeError(
        f"could not extend an orthonormal basis of {Q.shape[0]} rows in {dim} dimensions: every new direction "
        "stayed inside its span (the dimension is exhausted, or the products are not finite)"
    )


def orthonormalize(X: Tensor, Q: Tensor, gen: torch.Generator) -> Tensor:
    """`orthonormalize_` on a contiguous copy of X.

    Args:
        X: rows [b, dim].
        Q: orthonormal rows [m, dim].
        gen: CPU generator for replacement rows.

    Returns:
        The orthonormalized copy.
    """
    return orthonormalize_(X.clone(memory_format=torch.contiguous_format), Q, gen)
