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

Under torch.distributed the points of each block are split over the ranks (contiguous shares) and the
block's results are summed over ranks (each rank fills only its share), so every rank ends with the
whole grid. Blocks are the resumable unit: after each one `on_state` receives the state
{"loss", "accuracy", "done"}; passing it back as `state` skips the finished points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from landscape import distributed as dist
from landscape import memory
from landscape.data import part_slice
from landscape.errors import LandscapeError
from landscape.modes import preserved_modes
from landscape.surface.directions import as_direction, parameters_of

BN_MODES = ("eval", "recompute")
CPU_ROWS = 1 << 16  # CPU: at most this many point×sample rows per vmapped forward (BENCHMARKS.md, surface grid)
BACKENDS = ("auto", "vmap", "loop")


@dataclass
class GridValues:
    """loss [P] (mean over the samples), accuracy [P] (fraction correct, NaN when not classification),
    info: how it ran (backend, points_per_pass, batch_size, bn)."""

    loss: np.ndarray
    accuracy: np.ndarray
    info: dict


def _activation_bytes(model: nn.Module, params: dict, buffers: dict, X: Tensor) -> int:
    """Largest module output for this input (bytes), from forward hooks on one plain forward."""
    biggest = [X.numel() * X.element_size()]

    def hook(_m, _i, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                biggest[0] = max(biggest[0], t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), preserved_modes(model, False):  # eval: a BatchNorm must not update its buffers
            functional_call(model, (params, buffers), (X,))
    finally:
        for h in handles:
            h.remove()
    return biggest[0]


def pick_backend(model: nn.Module, device: torch.device, backend: str = "auto") -> str:
    """"vmap" (C points per kernel) or "loop" (one `functional_call` per point, still one data pass per
    chunk, no weights written anywhere). auto: vmap on an accelerator, where one small model leaves the
    device idle; loop on a CPU, where the forward is bound by matmul arithmetic that batching does not
    reduce, a C-wide chunk's activations fall out of cache, and vmapped convolutions become slower grouped
    convolutions (BENCHMARKS.md, surface grid: vmap 0.6-0.8x the loop's speed on the 20x128 FC net)."""
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


def _bn_modules(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def evaluate_grid(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Any,
                  directions: Sequence[Mapping[str, Tensor] | Tensor], coords: Any, *,
                  origin: Mapping[str, Tensor] | None = None, bn: str = "eval", accuracy: bool | None = None,
                  batch_size: int | None = None, max_memory: int | None = None, points_per_pass: int | None = None,
                  backend: str = "auto", min_blocks: int = 1, state: dict | None = None,
                  on_state: Callable[[dict], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> GridValues:
    """Loss (mean of `loss_fn`, a batch-mean loss such as `F.cross_entropy`) and accuracy at each row of
    `coords` [P, m] (or [P] for m = 1), for the points origin + Σ_j coords[:, j]·directions[j].

    data: (X, y) tensors or an object with `.X`, `.y` (every sample is used; split into `batch_size`
    batches, default: as many as the memory budget allows). origin: parameters (default: the model's).
    accuracy: compute argmax accuracy (default: when y holds integer labels). max_memory: bytes for one
    chunk of points (default: half the free CUDA memory, or a quarter of free RAM up to 2 GiB).
    points_per_pass: override the chunk size; min_blocks: cut the grid into at least this many blocks
    (each a resumable unit and a progress step). backend: see `pick_backend`. progress(n): called with
    the points finished per block. The model and its buffers are left as they were."""
    if bn not in BN_MODES:
        raise LandscapeError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    X, y = (data.X, data.y) if hasattr(data, "X") else tuple(data)
    n = len(y)
    if n < 1:
        raise LandscapeError("no samples to evaluate the surface on")
    dirs = [as_direction(model, d, f"direction {j}") for j, d in enumerate(directions)]
    base = parameters_of(model) if origin is None else as_direction(model, origin, "origin")
    names = list(base)
    C = torch.as_tensor(np.asarray(coords, dtype=np.float64))
    C = C[:, None] if C.dim() == 1 else C
    if C.dim() != 2 or C.shape[1] != len(dirs):
        raise LandscapeError(f"coords must have shape [points, {len(dirs)}], got {list(C.shape)}")
    P, m = C.shape
    first = base[names[0]]
    dtype, device = first.dtype, first.device
    backend = pick_backend(model, device, backend)
    C = C.to(device=device, dtype=dtype)
    D = {k: torch.stack([d[k] for d in dirs]).reshape(m, -1) for k in names}     # [m, numel]
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    bns = _bn_modules(model) if bn == "recompute" else []
    if accuracy is None:
        accuracy = not (y.is_floating_point() or y.is_complex())

    budget = memory.budget(device, memory.GRID_SHARE, max_memory)
    param_bytes = sum(t.numel() for t in base.values()) * first.element_size()
    probe = min(n, 8)
    act = _activation_bytes(model, base, buffers, X[:probe]) / probe          # bytes per sample
    if batch_size is None:
        batch_size = int(max(1, min(n, (budget // 4) // max(1.0, 3 * act))))
    per_point = param_bytes * (2 if bns else 1) + 3 * act * min(batch_size, n)
    chunk = points_per_pass or int(max(1, min(P, budget // max(1.0, per_point))))
    if points_per_pass is None and device.type == "cpu":  # bigger chunks only add memory traffic on a CPU
        chunk = max(1, min(chunk, CPU_ROWS // min(batch_size, n)))
    chunk = max(1, min(chunk, -(-P // (max(1, min_blocks) * dist.world_size()))))
    if dist.world_size() > 1:  # every rank must cut the same blocks
        t = torch.tensor([-chunk], dtype=torch.int64)
        chunk = -int(dist.all_reduce_max(t)[0])
    batches = list(zip(X.split(batch_size), y.split(batch_size)))

    if state is None:
        state = {"loss": np.full(P, np.nan), "accuracy": np.full(P, np.nan), "done": np.zeros(P, dtype=bool)}
    elif any(len(np.asarray(state.get(k, ()))) != P for k in ("loss", "accuracy", "done")):
        raise LandscapeError(f"the saved grid state does not have {P} points")
    todo = np.flatnonzero(~np.asarray(state["done"], dtype=bool))
    world, rank = dist.world_size(), dist.rank()
    block = chunk * world

    def stacked(idx: Tensor) -> dict[str, Tensor]:
        c = C[idx]
        return {k: base[k] + (c @ D[k]).reshape(len(idx), *base[k].shape) for k in names}

    def point(p: dict, b: dict, ints: dict, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        out = functional_call(model, (p, b, ints), (xb,))
        loss = loss_fn(out, yb).reshape(()) * yb.shape[0]
        hit = (out.argmax(-1) == yb).sum().to(loss.dtype) if accuracy else loss.new_zeros(())
        return loss, hit

    floats = {k: b for k, b in buffers.items() if b.is_floating_point()}
    ints = {k: b for k, b in buffers.items() if not b.is_floating_point()}
    for start in range(0, len(todo), block):
        ids = todo[start:start + block]
        mine = torch.as_tensor(ids[part_slice(len(ids), rank, world)], device=device)
        out = torch.zeros(len(ids), 2, dtype=torch.float64, device=device)
        if len(mine):
            params = stacked(mine)
            with torch.no_grad(), preserved_modes(model, False):
                if bns:
                    bufs, ints_p = _recompute_bn(model, bns, params, floats, ints, batches, backend)
                    b_dims: Any = 0
                else:
                    bufs, ints_p, b_dims = floats, ints, None
                f = _map(point, (0, b_dims, None, None, None), backend)
                lo = part_slice(len(ids), rank, world).start
                for xb, yb in batches:
                    loss, hit = f(params, bufs, ints_p, xb, yb)
                    out[lo:lo + len(mine), 0] += loss.double()
                    out[lo:lo + len(mine), 1] += hit.double()
        if world > 1:
            out = dist.all_reduce_sum(out.to(dist.comm_device())).to(device)
        out = (out / n).cpu().numpy()
        state["loss"][ids] = out[:, 0]
        state["accuracy"][ids] = out[:, 1] if accuracy else np.nan
        state["done"][ids] = True
        if on_state is not None:
            on_state(state)
        if progress is not None:
            progress(len(ids))
    info = {"backend": backend, "points_per_pass": chunk, "batch_size": batch_size, "bn": bn, "points": P}
    return GridValues(np.asarray(state["loss"], dtype=np.float64), np.asarray(state["accuracy"], dtype=np.float64),
                      info)


def _recompute_bn(model: nn.Module, bns: list[_BatchNorm], params: dict, floats: dict, ints: dict,
                  batches: list, backend: str) -> tuple[dict, dict]:
    """Per-point running statistics: reset, then a train-mode pass with the cumulative average."""
    k = next(iter(params.values())).shape[0]
    stats = {}
    for name, b in floats.items():
        mod_name, _, leaf = name.rpartition(".")
        fresh = torch.ones_like(b) if leaf == "running_var" else torch.zeros_like(b)
        stats[name] = fresh.expand(k, *b.shape).clone() if leaf in ("running_mean", "running_var") else \
            b.expand(k, *b.shape).clone()
    counts = {k_: torch.zeros_like(v) if k_.endswith("num_batches_tracked") else v.clone() for k_, v in ints.items()}
    saved = [(m, m.momentum) for m in bns]

    def run(p: dict, b: dict, i: dict, xb: Tensor) -> Tensor:
        return functional_call(model, (p, b, i), (xb,))

    try:
        with preserved_modes(model, True):
            for step, (xb, _) in enumerate(batches):
                for m in bns:
                    m.momentum = 1.0 / (step + 1)
                _map(run, (0, 0, None, None), backend)(params, stats, counts, xb)
    finally:
        for m, mom in saved:
            m.momentum = mom
    for name, c in counts.items():
        if name.endswith("num_batches_tracked"):
            c.fill_(len(batches))
    return stats, counts


def mesh_coords(x: Any, y: Any | None = None) -> np.ndarray:
    """Grid points as coordinate rows: [len(x), 1] in 1-D; in 2-D [len(y)·len(x), 2] in numpy.meshgrid
    order (row p = i·len(x) + j is (x[j], y[i])), so values.reshape(len(y), len(x)) is the surface."""
    x = np.asarray(x, dtype=np.float64)
    if y is None:
        return x[:, None]
    X, Y = np.meshgrid(x, np.asarray(y, dtype=np.float64))
    return np.stack([X.ravel(), Y.ravel()], 1)
