"""Spectra of the Hessian's diagonal blocks, all blocks' Lanczos vectors sharing each data pass.

For a block B of coordinates (a parameter block, `grouping.param_blocks`), the restricted operator is the
principal submatrix

    H_BB v = (H [v on B, 0 elsewhere])_B          (`RestrictedOperator`: a LinearOperator of dim |B|)

`block_spectra(op, blocks)` computes every block's SLQ density (`SpectralDensity`, docs/methods.md §E.7):

- a block with |B| ≤ exact_max (default iters · vectors, the products its Lanczos chains would cost) is
  measured exactly: its |B| unit vectors, stacked with those of every other such block, go through one
  product of the full operator; H_BB is read off, symmetrized and diagonalized in float64 (nodes = its
  eigenvalues, weights 1/|B|);
- every other block runs `lanczos` on its own H_BB (`vectors` chains of min(iters, |B|) steps, seed
  `seed + i` for the i-th block in order), each block in its own thread. At every step each thread hands its
  [|B|, vectors] block to a rendezvous; when all have, their columns are placed on their blocks' coordinates
  in ONE [dim, Σ vectors] matrix and the full operator is applied once: B blocks × k vectors cost one data
  pass per step, not B passes. The arithmetic of each block is that of `lanczos(RestrictedOperator(op, B))`.

Memory: the stacked columns take 3 · dim · Σ vectors numbers per pass (the embedded input, the operator's
tangents and its output); when that exceeds `max_memory` (default: `landscape.memory.budget`'s basis share)
the columns go through the operator in consecutive groups, one data pass each. The Lanczos bases take what
`lanczos` states for k = vectors chains of |B| numbers, summed over blocks: with full reorthogonalization
Σ_B k · (iters + 5) · |B| ≤ k · (iters + 5) · dim, as one SLQ run; each block's reorthogonalization ("auto")
is chosen from its share |B| / Σ|B| of the budget. Selective orthogonalization replays products; a replaying
block simply meets the others at the rendezvous more often.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from landscape import memory
from landscape.errors import LandscapeError
from landscape.hessian.blocks.grouping import ParamBlock, param_blocks
from landscape.hessian.solvers.lanczos import lanczos
from landscape.hessian.solvers.protocol import LinearOperator, as_operator, check_operator
from landscape.hessian.solvers.spectrum import SpectralDensity

Segments = tuple[tuple[int, int], ...]


def _merge(segments: Sequence[tuple[int, int]]) -> Segments:
    """Sorted, touching ranges joined: ((0, 3), (3, 5)) → ((0, 5),)."""
    out: list[list[int]] = []
    for a, b in sorted(segments):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def _coordinate_blocks(blocks) -> bool:
    """Are `blocks` given as flat coordinates ({name: slice | range | [(start, stop), ...]})?"""
    def ranges(v) -> bool:
        return isinstance(v, (slice, range)) or (isinstance(v, (list, tuple)) and bool(v) and all(
            isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(i, int) for i in s) for s in v))
    return isinstance(blocks, Mapping) and bool(blocks) and all(ranges(v) for v in blocks.values())


def block_segments(op: LinearOperator, blocks: Mapping | Sequence | None = None) -> dict[str, tuple[str, Segments]]:
    """{block name: (kind, coordinate ranges)} of `op` for `blocks`.

    Args:
        op: the full operator. A curvature operator (with `model` and `layout`) accepts parameter blocks:
            None (the default grouping), a list of `ParamBlock`, or what `param_blocks` takes; any operator
            accepts a mapping {name: slice | range | [(start, stop), ...]} of flat coordinates.
        blocks: as above.

    Returns:
        Each block's kind ("coordinates" for coordinate blocks) and its merged [start, stop) ranges; a block
        outside [0, dim) or two blocks sharing a coordinate is a LandscapeError.
    """
    dim = int(op.dim)
    if _coordinate_blocks(blocks):
        out = {}
        for name, spec in blocks.items():
            if isinstance(spec, (slice, range)):
                spec = [(spec.start or 0, dim if spec.stop is None else spec.stop)]
            out[str(name)] = ("coordinates", _merge([tuple(s) for s in spec]))
    else:
        layout, model = getattr(op, "layout", None), getattr(op, "model", None)
        if layout is None or model is None:
            raise LandscapeError("blocks: this operator has no parameters; give blocks as {name: slice or "
                                 "[(start, stop), ...]} of its coordinates")
        if not (isinstance(blocks, Sequence) and blocks and all(isinstance(b, ParamBlock) for b in blocks)):
            blocks = param_blocks(model, blocks, params=layout.names)
        offsets, start = {}, 0
        for n, size in zip(layout.names, layout.sizes):
            offsets[n], start = (start, start + size), start + size
        out = {}
        for b in blocks:
            missing = [p for p in b.params if p not in offsets]
            if missing:
                raise LandscapeError(f"blocks: block {b.name!r} names parameters the operator does not "
                                     f"differentiate: {missing[:3]}")
            out[b.name] = (b.kind, _merge([offsets[p] for p in b.params]))
    _check_disjoint(out, dim)
    return out


def _check_disjoint(found: dict[str, tuple[str, Segments]], dim: int) -> None:
    ranges = sorted((a, b, name) for name, (_, segs) in found.items() for a, b in segs)
    for (_, b0, n0), (a1, _, n1) in zip(ranges, ranges[1:]):
        if a1 < b0:
            raise LandscapeError(f"blocks: {n0!r} and {n1!r} overlap")
    bad = [n for a, b, n in ranges if a < 0 or b > dim or a >= b]
    if bad:
        raise LandscapeError(f"blocks: block {bad[0]!r} has an empty range or one outside [0, {dim})")


def _size(segs: Segments) -> int:
    return sum(b - a for a, b in segs)


def _gather(full: Tensor, segs: Segments) -> Tensor:
    """Rows of `full` [dim, k] on the block's ranges → [|B|, k]."""
    return torch.cat([full[a:b] for a, b in segs]) if len(segs) > 1 else full[segs[0][0]:segs[0][1]]


def _scatter(full: Tensor, segs: Segments, part: Tensor, cols: slice) -> None:
    """full[block rows, cols] = part."""
    at = 0
    for a, b in segs:
        full[a:b, cols] = part[at:at + b - a]
        at += b - a


class RestrictedOperator:
    """H_BB: the principal submatrix of `op` on the coordinates `segments` (a LinearOperator of dim |B|).

    Args:
        op: the full operator (dim, dtype, device, matmat).
        segments: the block's [start, stop) coordinate ranges (see `block_segments`).
    """

    def __init__(self, op: LinearOperator, segments: Sequence[tuple[int, int]]):
        self.op = check_operator(op, "RestrictedOperator")
        self.segments = _merge(segments)
        self.dim, self.dtype, self.device = _size(self.segments), op.dtype, op.device

    def matmat(self, V: Tensor) -> Tensor:
        """(H [V on B, 0 elsewhere])_B for V [|B|, k].

        Args:
            V: [|B|, k] vectors on the block.

        Returns:
            H_BB V [|B|, k].
        """
        V = torch.as_tensor(V).to(self.device, self.dtype)
        full = torch.zeros(int(self.op.dim), V.shape[1], dtype=self.dtype, device=self.device)
        _scatter(full, self.segments, V, slice(None))
        return _gather(self.op.matmat(full), self.segments)


def _apply_stacked(op: LinearOperator, parts: list[tuple[Segments, Tensor]], max_memory: int | None,
                   counter: dict) -> list[Tensor]:
    """For each (ranges, V [|B|, k]): (H [V on B, 0 elsewhere])_B, all columns through as few products of `op`
    as the memory budget allows (3 · dim numbers per column in flight)."""
    dim = int(op.dim)
    per_column = 3 * dim * torch.empty((), dtype=op.dtype).element_size()
    group = max(1, memory.budget(op.device, memory.BASIS_SHARE, max_memory) // per_column)
    outs: list[Tensor | None] = [None] * len(parts)
    i = 0
    while i < len(parts):  # groups of whole blocks; one block wider than the budget goes alone
        j, width = i, 0
        while j < len(parts) and (j == i or width + parts[j][1].shape[1] <= group):
            width += parts[j][1].shape[1]
            j += 1
        full = torch.zeros(dim, width, dtype=op.dtype, device=op.device)
        at = 0
        for segs, V in parts[i:j]:
            _scatter(full, segs, V.to(op.device, op.dtype), slice(at, at + V.shape[1]))
            at += V.shape[1]
        out = op.matmat(full)
        counter["matmats"] += 1
        counter["columns"] += width
        at = 0
        for k in range(i, j):
            segs, V = parts[k]
            outs[k] = _gather(out[:, at:at + V.shape[1]], segs)
            at += V.shape[1]
        i = j
    return outs


class _Rendezvous:
    """Collects one [|B|, k] block from every active thread, applies the full operator once to all of them
    (`_apply_stacked`) and hands each thread its result. A thread that finishes leaves; a failure anywhere
    stops every thread."""

    def __init__(self, count: int, compute: Callable[[dict[int, Tensor]], dict[int, Tensor]]):
        self.active, self.compute = count, compute
        self.pending: dict[int, Tensor] = {}
        self.results: dict[int, Tensor] = {}
        self.round, self.error = 0, None
        self.cond = threading.Condition()

    def call(self, i: int, V: Tensor) -> Tensor:
        with self.cond:
            self._raise()
            self.pending[i] = V
            mine = self.round
            self._maybe_run()
            while self.round == mine and self.error is None:
                self.cond.wait()
            self._raise()
            return self.results.pop(i)

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self._maybe_run()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.error = self.error or error
            self.cond.notify_all()

    def _raise(self) -> None:
        if self.error is not None:
            raise _Stopped from self.error

    def _maybe_run(self) -> None:
        if self.error is not None or not self.pending or len(self.pending) < self.active:
            return
        try:
            self.results.update(self.compute(self.pending))
        except BaseException as e:  # noqa: BLE001 - handed to every thread, re-raised by block_spectra
            self.error = e
        self.pending = {}
        self.round += 1
        self.cond.notify_all()


class _Stopped(Exception):
    """Raised in a block's thread when another thread or the shared product failed."""


@dataclass
class BlockSpectra:
    """Per-block spectra: `spectra[name]` a SpectralDensity over the block's |B| coordinates; `kinds[name]`,
    `method[name]` ("exact" or "lanczos"), `segments[name]`; meta: products, data passes, seconds."""

    spectra: dict[str, SpectralDensity]
    kinds: dict[str, str]
    method: dict[str, str]
    segments: dict[str, Segments]
    meta: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The block names, in the order of `spectra`."""
        return list(self.spectra)

    def summary(self) -> list[dict]:
        """One row per block: name, kind, dim, method, λmax, λmin, trace (± vector stderr)."""
        return [{"block": n, "kind": self.kinds[n], "dim": sd.dim, "method": self.method[n],
                 "lambda_max": sd.lambda_max, "lambda_min": sd.lambda_min, "trace": sd.trace,
                 "trace_stderr": sd.trace_stderr} for n, sd in self.spectra.items()]

    def to_dict(self) -> dict:
        """JSON-able: the summary rows with each block's SLQ nodes and weights, and meta."""
        rows = self.summary()
        for r in rows:
            sd = self.spectra[r["block"]]
            r.update(nodes=sd.nodes.tolist(), weights=sd.weights.tolist())
        return {"blocks": rows, "meta": dict(self.meta)}


def _exact(op: LinearOperator, blocks: dict[str, Segments], max_memory: int | None, counter: dict
           ) -> dict[str, SpectralDensity]:
    """Exact spectra of small blocks: unit vectors of all of them through shared products."""
    parts = [(segs, torch.eye(_size(segs), dtype=op.dtype, device=op.device)) for segs in blocks.values()]
    out = {}
    for name, M in zip(blocks, _apply_stacked(op, parts, max_memory, counter)):
        M = M.to(torch.float64)
        eig = torch.linalg.eigvalsh((M + M.T) / 2).cpu().numpy()[None, :]
        out[name] = SpectralDensity(eig, np.full_like(eig, 1.0 / eig.size), eig.size, {"method": "exact"})
    return out


def block_spectra(op: LinearOperator, blocks: Mapping | Sequence | None = None, *, iters: int = 40,
                  vectors: int = 4, seed: int = 0, exact_max: int | None = None, reorth: str = "auto",
                  max_memory: int | None = None) -> BlockSpectra:
    """SLQ densities of every block's restricted Hessian H_BB, all blocks sharing each data pass.

    Args:
        op: the full operator (a HessianOperator, GGNOperator or any LinearOperator).
        blocks: see `block_segments` (default: `param_blocks`' grouping of the operator's parameters).
        iters: Lanczos steps per chain (at most |B| for each block).
        vectors: random vectors (chains) per block.
        seed: the i-th block's chains start from Rademacher vectors of seed + i.
        exact_max: blocks of at most this many coordinates are diagonalized exactly (default iters·vectors).
        reorth: "auto", "full", "selective" or "none" (`lanczos`; "auto" chooses per block from its share of
            the budget).
        max_memory: bytes for the stacked columns in flight, and for all blocks' Lanczos bases together, each
            block getting the share |B| / Σ|B| (default: the memory budget's basis share).

    Returns:
        A BlockSpectra; meta records matmats (data passes), columns (vector products), seconds.
    """
    check_operator(op, "block_spectra")
    if iters < 1 or vectors < 1:
        raise LandscapeError(f"block_spectra: iters and vectors must be at least 1, got {iters} and {vectors}")
    t0 = time.perf_counter()
    found = block_segments(op, blocks)
    limit = iters * vectors if exact_max is None else exact_max
    small = {n: s for n, (_, s) in found.items() if _size(s) <= limit}
    large = {n: s for n, (_, s) in found.items() if _size(s) > limit}
    counter = {"matmats": 0, "columns": 0}
    spectra = _exact(op, small, max_memory, counter) if small else {}
    spectra.update(_lanczos_all(op, large, [list(found).index(n) for n in large], iters, vectors, seed,
                                reorth, max_memory, counter))
    ordered = {n: spectra[n] for n in found}
    meta = {**counter, "seconds": time.perf_counter() - t0, "iters": iters, "vectors": vectors, "seed": seed,
            "exact_max": limit, "reorth": reorth, "dim": int(op.dim)}
    return BlockSpectra(ordered, {n: k for n, (k, _) in found.items()},
                        {n: "exact" if n in small else "lanczos" for n in found},
                        {n: s for n, (_, s) in found.items()}, meta)


def _lanczos_all(op: LinearOperator, blocks: dict[str, Segments], index: list[int], iters: int, vectors: int,
                 seed: int, reorth: str, max_memory: int | None, counter: dict) -> dict[str, SpectralDensity]:
    """`lanczos` on every block's H_BB, one thread per block, products stacked by a `_Rendezvous`."""
    if not blocks:
        return {}
    names = list(blocks)

    def compute(pending: dict[int, Tensor]) -> dict[int, Tensor]:
        keys = sorted(pending)
        outs = _apply_stacked(op, [(blocks[names[i]], pending[i]) for i in keys], max_memory, counter)
        return dict(zip(keys, outs))

    meet = _Rendezvous(len(names), compute)
    results: dict[int, object] = {}
    total = memory.budget(op.device, memory.BASIS_SHARE, max_memory)
    dims = {name: _size(segs) for name, segs in blocks.items()}

    def run(i: int) -> None:
        d = dims[names[i]]
        block_op = as_operator(lambda V: meet.call(i, V), d, op.dtype, op.device)
        try:
            results[i] = lanczos(block_op, min(iters, d), vectors, seed + index[i], reorth=reorth,
                                 max_basis_bytes=max(1, total * d // sum(dims.values())))
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - stops the other threads, re-raised below
            meet.fail(e)
        finally:
            meet.leave()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if meet.error is not None:
        raise meet.error
    out = {}
    for i, name in enumerate(names):
        res = results[i]
        nodes, weights = res.ritz()
        out[name] = SpectralDensity(nodes, weights, _size(blocks[name]),
                                    {"method": "lanczos", "seed": seed + index[i], "breakdowns": res.breakdowns})
    return out
