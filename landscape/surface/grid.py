"""Loss (and accuracy) at many points θ(c) = θ₀ + Σ_j c_j d_j, many points per data pass.

A chunk of C points is one stack of parameter sets [C, *shape] per parameter (θ₀ + C×m coordinates
times the m directions, one matmul per parameter). Each batch of the sample set is read once per chunk:
with the "vmap" backend `torch.func.vmap` over `functional_call` runs all C points on it as C-wide
batched kernels; with the "loop" backend (the CPU default, `pick_backend`) `functional_call` runs the C
points one after the other on it. Either way no weights are written into the model and no data loader
runs per point. C comes from a memory budget (the stacked parameters plus an estimate of the activations
of one point's batch), capped on a CPU at 65,536 point×sample rows per forward. Mean losses are summed
as loss·batch size over the batches and divided by the sample count (docs/methods.md §F.3).

BatchNorm: by default the model's buffers (eval running statistics) are used at every point. With
`bn="recompute"` each point first gets its own running statistics: reset, then one train-mode pass over
the sample set with the cumulative average (momentum 1/(k+1) on batch k, what `momentum=None` does),
vmapped over the points with per-point buffers; then the eval pass uses them.

Under torch.distributed, with split="points" (every rank passes the whole sample set) the points of each
block are split over the ranks (contiguous shares) and the block's results are summed over ranks (each rank
fills only its share); with split="data" (data parallel: each rank passes its share of the samples) every
rank evaluates every point on its samples and the sums Σ w_b ℓ_b, the hits and Σ w_b are added over the
ranks, so the mean is the one of all samples. Either way every rank ends with the whole grid.
Blocks are the resumable unit: after each one `on_state` receives the state
{"loss", "accuracy", "done"}; passing it back as `state` skips the finished points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.nn.modules.batchnorm import _BatchNorm

from landscape import distributed as dist
from landscape import memory
from landscape.data import part_slice
from landscape.errors import LandscapeError
from landscape.modes import preserved_modes, running_stats_modules
from landscape.objective import Batch, Objective, concat
from landscape.surface.directions import as_direction, parameters_of

BN_MODES = ("eval", "recompute")
SPLITS = ("points", "data")
CPU_ROWS = 1 << 16  # CPU: at most this many point×sample rows per vmapped forward (BENCHMARKS.md, surface grid)
BACKENDS = ("auto", "vmap", "loop")


@dataclass
class GridValues:
    """loss [P] (mean over the samples), accuracy [P] (fraction correct, NaN when not classification),
    info: how it ran (backend, points_per_pass, batch_size, bn)."""

    loss: np.ndarray
    accuracy: np.ndarray
    info: dict


def _activation_bytes(objective: Objective, state: tuple[dict, dict], batch: Batch) -> int:
    """Largest module output for this batch (bytes), from forward hooks on one plain forward."""
    biggest = [max((t.numel() * t.element_size() for t in batch.tensors() if isinstance(t, Tensor)), default=0)]

    def hook(_m, _i, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                biggest[0] = max(biggest[0], t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in objective.model.modules()]
    try:
        with torch.no_grad(), preserved_modes(objective.model, False):  # eval: BatchNorm must not update buffers
            objective.call(batch, state)
    finally:
        for h in handles:
            h.remove()
    return biggest[0]


def pick_backend(model: nn.Module, device: torch.device, backend: str = "auto") -> str:
    """"vmap" (C points per kernel) or "loop" (one `functional_call` per point, still one data pass per
    chunk, no weights written anywhere). auto: vmap on an accelerator, where one small model leaves the
    device idle; loop on a CPU, where the forward is bound by matmul arithmetic that batching does not
    reduce, a C-wide chunk's activations fall out of cache, and vmapped convolutions become slower grouped
    convolutions (BENCHMARKS.md, surface grid: vmap 0.6-0.8x the loop's speed on the 20x128 FC net).

    Args:
        model: the model evaluated (the rule depends on the device alone).
        device: where the grid is evaluated.
        backend: "auto", "vmap" or "loop".

    Returns:
        "vmap" or "loop".
    """
    if backend not in BACKENDS:
        raise LandscapeError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    return "loop" if device.type == "cpu" else "vmap"


def _map(fn: Callable, in_dims: tuple, backend: str) -> Callable:
    """vmap(fn, in_dims), or the same map as a Python loop over the points (outputs stacked)."""
    if backend == "vmap":
        return vmap(fn, in_dims=in_dims)

    def looped(*args):
        k = next(next(iter(a.values())) if isinstance(a, dict) else a
                 for a, d in zip(args, in_dims) if d is not None).shape[0]
        outs = []
        for i in range(k):
            sliced = [a if d is None else ({n: t[i] for n, t in a.items()} if isinstance(a, dict) else a[i])
                      for a, d in zip(args, in_dims)]
            outs.append(fn(*sliced))
        if outs and isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs))
        return None
    return looped


def evaluate_grid(model: nn.Module | Objective, loss_fn: Any = None, data: Any = None,
                  directions: Sequence[Mapping[str, Tensor] | Tensor] = (), coords: Any = (), *,
                  origin: Mapping[str, Tensor] | None = None, bn: str = "eval", accuracy: bool | None = None,
                  batch_size: int | None = None, max_memory: int | None = None, points_per_pass: int | None = None,
                  backend: str = "auto", min_blocks: int = 1, split: str = "points", state: dict | None = None,
                  on_state: Callable[[dict], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> GridValues:
    """Loss and accuracy at each row of `coords` [P, m] (or [P] for m = 1), for the points
    origin + Σ_j coords[:, j]·directions[j].

    The loss is the objective's data-set mean (`landscape.objective.Objective`: Σ_b w_b ℓ_b / Σ_b w_b, any
    loss_fn, or the model's own loss of an HF model with loss_fn=None); accuracy is the fraction of correct
    argmax predictions over the same samples or tokens.

    Args:
        model: an nn.Module, or an Objective (then leave loss_fn and data out).
        loss_fn: batch-mean loss (None: the model's own).
        data: any form `landscape.objective.Batches` accepts; in-memory data is cut into `batch_size` batches.
        directions: m directions ({name: tensor} or flat vectors over all parameters).
        coords: [P, m] coordinates.
        origin: the center (default: the model's parameters).
        bn: "eval" (the model's buffers at every point) or "recompute" (each point's own BatchNorm statistics).
        accuracy: compute argmax accuracy (default: when the targets are integer labels).
        batch_size: samples per batch (default: as many as the memory budget allows).
        max_memory: bytes for one chunk of points (default: `landscape.memory.budget`'s grid share).
        points_per_pass: override the chunk size.
        backend: "auto", "vmap" or "loop" (see `pick_backend`).
        min_blocks: cut the grid into at least this many blocks (each a resumable unit and a progress step).
        split: under torch.distributed, "points" (each rank a share of the points, all of the data) or "data"
            (each rank all points on its own share of the data; see the module docstring).
        state: a saved {"loss", "accuracy", "done"} to resume from; on_state(state) is called after each block.
        progress: called with the points finished per block.

    Returns:
        GridValues with loss [P], accuracy [P] and how it ran. The model and its buffers are left as they were.
    """
    if bn not in BN_MODES:
        raise LandscapeError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if split not in SPLITS:
        raise LandscapeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "data" and bn == "recompute":
        raise LandscapeError("bn='recompute' needs every sample on every rank: use split='points'")
    objective = Objective.of(model, loss_fn, data)
    model = objective.model
    dirs = [as_direction(model, d, f"direction {j}") for j, d in enumerate(directions)]
    base = parameters_of(model) if origin is None else as_direction(model, origin, "origin")
    first = base[next(iter(base))]
    C = torch.as_tensor(np.asarray(coords, dtype=np.float64))
    C = C[:, None] if C.dim() == 1 else C
    if C.dim() != 2 or C.shape[1] != len(dirs):
        raise LandscapeError(f"coords must have shape [points, {len(dirs)}], got {list(C.shape)}")
    P, m = C.shape
    whole = concat(list(objective.batches(first.device, first.dtype))) if objective.data.materialized else None
    sample = whole if whole is not None else objective.prepare(objective.data.first(1)[0], first.device, first.dtype)
    objective.check(sample, {**base, **dict(model.named_buffers())})
    if accuracy is None:
        accuracy = isinstance(sample.targets, Tensor) and not (sample.targets.is_floating_point()
                                                                or sample.targets.is_complex())
    run = _Run(objective, base, {k: torch.stack([d[k] for d in dirs]).reshape(m, -1) for k in base},
               C.to(device=first.device, dtype=first.dtype), pick_backend(model, first.device, backend),
               running_stats_modules(model) if bn == "recompute" else [], accuracy, split)
    batch_size, chunk = run.sizes(sample, whole, batch_size, max_memory, points_per_pass, min_blocks)
    batches = whole.split(size=batch_size) if whole is not None else list(objective.batches(first.device, first.dtype))
    if state is None:
        state = {"loss": np.full(P, np.nan), "accuracy": np.full(P, np.nan), "done": np.zeros(P, dtype=bool)}
    elif any(len(np.asarray(state.get(k, ()))) != P for k in ("loss", "accuracy", "done")):
        raise LandscapeError(f"the saved grid state does not have {P} points")
    todo = np.flatnonzero(~np.asarray(state["done"], dtype=bool))
    block = chunk * (dist.world_size() if split == "points" else 1)
    for start in range(0, len(todo), block):
        ids = todo[start:start + block]
        out = run.block(ids, batches)
        state["loss"][ids] = out[:, 0]
        state["accuracy"][ids] = out[:, 1] if accuracy else np.nan
        state["done"][ids] = True
        if on_state is not None:
            on_state(state)
        if progress is not None:
            progress(len(ids))
    info = {"backend": run.backend, "points_per_pass": chunk, "batch_size": batch_size, "bn": bn, "points": P,
            "split": split}
    return GridValues(np.asarray(state["loss"], dtype=np.float64), np.asarray(state["accuracy"], dtype=np.float64),
                      info)


class _Run:
    """One grid evaluation: the points θ₀ + C D, how they are mapped over (vmap or a loop), and the
    per-point loss and hit sums of a block of points over all batches."""

    def __init__(self, objective: Objective, base: dict, D: dict, C: Tensor, backend: str, bns: list,
                 accuracy: bool, split: str = "points"):
        self.objective, self.base, self.D, self.C = objective, base, D, C
        self.backend, self.bns, self.accuracy, self.split = backend, bns, accuracy, split
        buffers = {k: b.detach() for k, b in objective.model.named_buffers()}
        self.floats = {k: b for k, b in buffers.items() if b.is_floating_point()}
        self.ints = {k: b for k, b in buffers.items() if not b.is_floating_point()}

    def sizes(self, sample: Batch, whole: Batch | None, batch_size: int | None, max_memory: int | None,
              points_per_pass: int | None, min_blocks: int) -> tuple[int, int]:
        """(samples per batch, points per chunk) from the grid's memory budget (see the module docstring)."""
        first = next(iter(self.base.values()))
        P = self.C.shape[0]
        n = whole.size if whole is not None else sample.size
        budget = memory.budget(first.device, memory.GRID_SHARE, max_memory)
        param_bytes = sum(t.numel() for t in self.base.values()) * first.element_size()
        few = sample.select(slice(0, min(sample.size, 8)))
        act = _activation_bytes(self.objective, (self.base, self.floats | self.ints), few) / few.size
        if batch_size is None:
            batch_size = int(max(1, min(n, (budget // 4) // max(1.0, 3 * act))))
        per_point = param_bytes * (2 if self.bns else 1) + 3 * act * min(batch_size, n)
        chunk = points_per_pass or int(max(1, min(P, budget // max(1.0, per_point))))
        if points_per_pass is None and first.device.type == "cpu":  # bigger chunks only add memory traffic
            chunk = max(1, min(chunk, CPU_ROWS // min(batch_size, n)))
        shares = dist.world_size() if self.split == "points" else 1
        chunk = max(1, min(chunk, -(-P // (max(1, min_blocks) * shares))))
        if dist.world_size() > 1:  # every rank must cut the same blocks
            chunk = -int(dist.all_reduce_max(torch.tensor([-chunk], dtype=torch.int64))[0])
        return batch_size, chunk

    def point(self, p: dict, b: dict, ints: dict, batch: Batch, weight: int) -> tuple[Tensor, Tensor]:
        """(w_b ℓ_b, correct predictions) of one point on one batch."""
        out = self.objective.output(batch, (p, b, ints))
        loss = self.objective.loss_of_output(out, batch).reshape(()) * weight
        hit = self.objective.correct(out, batch).to(loss.dtype) if self.accuracy else loss.new_zeros(())
        return loss, hit

    def block(self, ids: np.ndarray, batches: list[Batch]) -> np.ndarray:
        """[len(ids), 2]: mean loss and accuracy of the points `ids` (this rank's share of the points, or all of
        them on its share of the data; summed over ranks)."""
        world, rank = dist.world_size(), dist.rank()
        share = part_slice(len(ids), rank, world) if self.split == "points" else slice(0, len(ids))
        device = self.C.device
        mine = torch.as_tensor(ids[share], device=device)
        out = torch.zeros(len(ids) + 1, 2, dtype=torch.float64, device=device)  # last row: Σ w_b (data split)
        total = sum(self.objective.weight(b) for b in batches)
        if len(mine):
            c = self.C[mine]
            params = {k: self.base[k] + (c @ self.D[k]).reshape(len(mine), *self.base[k].shape) for k in self.base}
            with torch.no_grad(), preserved_modes(self.objective.model, False):
                if self.bns:
                    bufs, ints_p = _recompute_bn(self.objective, self.bns, params, self.floats, self.ints, batches,
                                                 self.backend)
                    b_dims: Any = 0
                else:
                    bufs, ints_p, b_dims = self.floats, self.ints, None
                f = _map(self.point, (0, b_dims, None, None, None), self.backend)
                lo = share.start
                for batch in batches:
                    loss, hit = f(params, bufs, ints_p, batch, self.objective.weight(batch))
                    out[lo:lo + len(mine), 0] += loss.double()
                    out[lo:lo + len(mine), 1] += hit.double()
        if world > 1:
            out[-1, 0] = total if self.split == "data" else 0
            out = dist.all_reduce_sum(out.to(dist.comm_device())).to(device)
            total = float(out[-1, 0]) if self.split == "data" else total
        return (out[:-1] / total).cpu().numpy()


def _recompute_bn(objective: Objective, bns: list[_BatchNorm], params: dict, floats: dict, ints: dict,
                  batches: list[Batch], backend: str) -> tuple[dict, dict]:
    """Per-point running statistics: reset, then a train-mode pass with the cumulative average."""
    k = next(iter(params.values())).shape[0]
    stats = {}
    for name, b in floats.items():
        leaf = name.rpartition(".")[2]
        fresh = torch.ones_like(b) if leaf == "running_var" else torch.zeros_like(b)
        stats[name] = fresh.expand(k, *b.shape).clone() if leaf in ("running_mean", "running_var") else \
            b.expand(k, *b.shape).clone()
    counts = {k_: torch.zeros_like(v) if k_.endswith("num_batches_tracked") else v.clone() for k_, v in ints.items()}
    saved = [(m, m.momentum) for m in bns]

    def run(p: dict, b: dict, i: dict, batch: Batch) -> Tensor:
        return objective.output(batch, (p, b, i))

    try:
        with preserved_modes(objective.model, True):
            for step, batch in enumerate(batches):
                for m in bns:
                    m.momentum = 1.0 / (step + 1)
                _map(run, (0, 0, None, None), backend)(params, stats, counts, batch)
    finally:
        for m, mom in saved:
            m.momentum = mom
    for name, c in counts.items():
        if name.endswith("num_batches_tracked"):
            c.fill_(len(batches))
    return stats, counts


def mesh_coords(x: Any, y: Any | None = None) -> np.ndarray:
    """Grid points as coordinate rows: [len(x), 1] in 1-D; in 2-D [len(y)·len(x), 2] in numpy.meshgrid
    order (row p = i·len(x) + j is (x[j], y[i])), so values.reshape(len(y), len(x)) is the surface.

    Args:
        x: the x coordinates.
        y: the y coordinates (None: a 1-D grid).

    Returns:
        The coordinate rows.
    """
    x = np.asarray(x, dtype=np.float64)
    if y is None:
        return x[:, None]
    X, Y = np.meshgrid(x, np.asarray(y, dtype=np.float64))
    return np.stack([X.ravel(), Y.ravel()], 1)
