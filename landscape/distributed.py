"""torch.distributed in a few helpers: join from torchrun's environment, shard, reduce, agree, leave.

Under `torchrun --nproc_per_node W ...` each process finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment; `setup(device)` joins the process group once (NCCL on CUDA with one GPU per LOCAL_RANK,
gloo on CPU) and returns this rank's device. Without torchrun every helper is the single-process
identity: rank 0 of 1, reductions return their input, `agree` re-raises, `barrier` returns.

A data pass that sums over samples becomes distributed with one collective: each rank sums over its
shard (`landscape.data.shard(data)`), `all_reduce_sum(total)` adds the W partial sums in place, and the mean divides
by the global sample count N:  (1/N) Σ_i f_i = (1/N) Σ_r Σ_{i ∈ shard r} f_i.  Pack everything one
pass produces (k vectors, counts) into one tensor so the pass costs one all_reduce.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line, resolve_device

T = TypeVar("T")
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """True in a process started by torchrun (RANK and WORLD_SIZE are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun); valid before `setup`."""
    return _env_int("RANK") if launched() else 0


def active() -> bool:
    """True once this process has joined a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Rank in the process group (0 outside one)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes in the group (1 outside one)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes files and prints."""
    return rank() == 0


def setup(device: str = "auto") -> torch.device:
    """This process's device; under torchrun also join the process group (once; NCCL on CUDA, else gloo).

    With several ranks on CUDA each uses cuda:LOCAL_RANK, so `device` must be auto or cuda (no index).

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N" (a single process only).

    Returns:
        The torch.device this process computes on.
    """
    dev = resolve_device(device)
    if not launched():
        return dev
    world, local = _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if dev.type == "cuda":
        if dev.index is not None and world > 1:
            raise LandscapeError(f"under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda (or auto), "
                                 f"not {device!r}")
        if local >= torch.cuda.device_count():
            raise LandscapeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) visible")
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise LandscapeError(f"distributed runs use cpu (gloo) or cuda (nccl), not {dev}")
    if not active():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    return dev


def shutdown(sync: bool = True) -> None:
    """Leave the process group (no-op outside one). `sync` first waits for every rank, so none tears down
    its connections while another still uses them (gloo aborts then); pass False on an error path, where
    the other ranks may never arrive.

    Args:
        sync: wait for every rank before leaving.
    """
    if active():
        if sync and world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """Exit a CLI with `code`. A torchrun worker of a multi-rank run leaves with `os._exit` once its
    output is flushed: its process group is already destroyed (`shutdown`), and skipping interpreter
    finalization keeps gloo's and NCCL's C++ threads from aborting the exit (SIGABRT) after the
    run has ended cleanly, which torchrun would report as the run's failure.

    Args:
        code: the exit status.
    """
    if launched() and os.environ.get("WORLD_SIZE", "1") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _env_int(name: str) -> int:
    try:
        value = int(os.environ[name])
    except (KeyError, ValueError):
        raise LandscapeError(f"environment variable {name}={os.environ.get(name)!r} is not an integer "
                             f"(torchrun sets {', '.join(_ENV)})") from None
    if value < 0:
        raise LandscapeError(f"environment variable {name}={value} must be ≥ 0")
    return value


def comm_device() -> torch.device:
    """Where collective tensors must live: the current CUDA device under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: Tensor, op: str) -> Tensor:
    if world_size() == 1:
        return tensor
    op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    dev = comm_device()
    if tensor.device == dev and tensor.is_contiguous():
        dist.all_reduce(tensor, op=op)
    else:
        buf = tensor.to(dev).contiguous()
        dist.all_reduce(buf, op=op)
        tensor.copy_(buf)
    return tensor


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Replace `tensor` by its sum over all ranks, in place, and return it (identity in a single process).

    One collective however large the tensor: the Hessian operator reduces its [dim, k] block of k summed
    products (and the sample count) at once, then divides by the global count.

    Args:
        tensor: this rank's part, reduced in place.

    Returns:
        The same tensor, now Σ_r tensor_r.
    """
    return _all_reduce(tensor, "sum")


def all_reduce_max(tensor: Tensor) -> Tensor:
    """Replace `tensor` by its elementwise maximum over all ranks, in place (identity in a single process).

    Args:
        tensor: this rank's part, reduced in place.

    Returns:
        The same tensor, now max_r tensor_r.
    """
    return _all_reduce(tensor, "max")


def all_reduce_with_count(total: Tensor, count: int) -> tuple[Tensor, int]:
    """(Σ_r total_r, Σ_r count_r) over the ranks in one collective (identity in a single process).

    The count (samples or tokens) travels in the same tensor as 8 base-16 digits, exact in any float dtype
    up to 2³²: a data-set mean over shards costs one all_reduce of its sum and its weight.

    Args:
        total: this rank's sum (any shape).
        count: this rank's weight.

    Returns:
        The summed total (a new tensor) and the summed count.
    """
    digits = torch.tensor([(count >> (4 * i)) & 15 for i in range(_COUNT_DIGITS)], dtype=total.dtype,
                          device=total.device)
    packed = all_reduce_sum(torch.cat([total.reshape(-1), digits]))
    count = sum(round(d) << (4 * i) for i, d in enumerate(packed[total.numel():].tolist()))
    return packed[: total.numel()].reshape(total.shape), count


_COUNT_DIGITS = 8


def all_gather_rows(rows: Tensor) -> Tensor:
    """Every rank's rows [n_r, ...] concatenated in rank order, on every rank (identity in a single process).

    Ranks may hold different numbers of rows (n_r = 0 too): one all_gather of the counts, one of the rows
    padded to the largest count.

    Args:
        rows: this rank's rows; the trailing shape and dtype must be the same on every rank.

    Returns:
        [Σ_r n_r, ...] on `rows`' device.
    """
    if world_size() == 1:
        return rows
    dev = comm_device()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=dev)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=rows.dtype, device=dev)
    padded[: rows.shape[0]] = rows.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]).to(rows.device)


def shard_model(model: nn.Module, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard `model` in place with FSDP2 over all ranks: `fully_shard` on every module of the outermost
    nn.ModuleLists (the repeated blocks: a zoo net's `blocks`, a transformer's layers), then on the root,
    which takes the parameters left over. Each block's parameters are gathered only for its own forward and backward.

    Args:
        model: built identically on every rank (same seed or weights): each rank keeps its rows of it.
        param_dtype: compute in this dtype (FSDP's MixedPrecisionPolicy; gradients are reduced in float32).

    Returns:
        `model`, its parameters now DTensors sharded along dim 0 (rebuild any optimizer after this).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not active():
        raise LandscapeError("sharding a model needs torch.distributed: start under torchrun")
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    blocks = [m for lst in model.modules() if isinstance(lst, nn.ModuleList) for m in lst
              if any(p.requires_grad for p in m.parameters())]
    inner = {id(sub) for block in blocks for sub in block.modules() if sub is not block}
    blocks = [block for block in blocks if id(block) not in inner]       # the outermost blocks only
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def barrier() -> None:
    """Wait until every rank arrives (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics...) to every rank, in place.

    Args:
        module: the model whose buffers are overwritten.
        src: the rank whose buffers are kept.
    """
    if world_size() == 1:
        return
    for buf in module.buffers():
        _broadcast(buf, src)


def _broadcast(tensor: Tensor, src: int) -> None:
    dev = comm_device()
    if tensor.device == dev and tensor.is_contiguous():
        dist.broadcast(tensor, src)
    else:
        buf = tensor.to(dev).contiguous()
        dist.broadcast(buf, src)
        tensor.copy_(buf)


def agree(error: BaseException | None) -> None:
    """Collective: if any rank failed, raise on every rank, so none waits forever for one that stopped.

    This rank's own `error` is re-raised as it is; a rank whose step succeeded raises `LandscapeError`
    carrying the first failed rank's message. Every rank must call it at the same point.

    Args:
        error: this rank's failure, or None.

    Raises:
        The rank's own error, or LandscapeError with the first failed rank's message.
    """
    if world_size() == 1:
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * world_size()
    dist.all_gather_object(messages, None if error is None else _one_line(error))
    if error is not None:
        raise error
    for r, message in enumerate(messages):
        if message is not None:
            raise LandscapeError(message if r == 0 else f"rank {r}: {message}")


def agreed(enabled: bool, fn: Callable[[], T]) -> T:
    """fn(); with `enabled` (under torch.distributed), a failure on any rank is raised on every rank (`agree`).

    Args:
        enabled: whether the ranks run `fn` together.
        fn: the step, called once on each rank.

    Returns:
        fn's result on this rank.
    """
    if not enabled:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - handed to `agree`, which re-raises it on every rank
        error = e
    agree(error)
    return result


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then on the other ranks: downloads and caches are written once, by rank 0.
    A failure on any rank is raised on every rank (`agree`).

    Args:
        fn: the step (downloads, cache writes).

    Returns:
        fn's result on this rank.
    """
    if world_size() == 1:
        return fn()
    result, error = None, None
    for turn in (True, False):
        if is_main() == turn:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - handed to `agree`, which re-raises it here
                error = e
        agree(error)
    return result


def _one_line(e: BaseException) -> str:
    """A rank's failure for the others: a LandscapeError's own line, else the type name and first line."""
    return first_line(e) if isinstance(e, LandscapeError) else f"{type(e).__name__}: {first_line(e)}"
