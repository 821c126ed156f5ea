"""Memory: one budget rule for every engine, and measuring what a prepared batch keeps alive.

`budget(device, share)` is the only place the project decides how many bytes it may use:

    budget = share · free(device)      free = torch.cuda.mem_get_info (CUDA), MemAvailable (CPU, /proc/meminfo;
                                              else free physical pages; else 8 GiB)

with `share` chosen by the caller for its job: the curvature operator's batch merging and graph cache
(`OPERATOR_SHARE`), SLQ's Lanczos bases (`BASIS_SHARE`), the loss-surface grid's stacked parameters and
activations (`GRID_SHARE`). A caller's explicit byte cap (`max_memory=`) replaces the rule.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

OPERATOR_SHARE = 0.5
"""The operator's share of free memory: half of it may hold cached per-batch graphs, half one batch's products."""
BASIS_SHARE = 0.5
"""The Lanczos bases' share (SLQ chains, top-k refinement), taken after the operator was built."""
GRID_SHARE = 0.25
"""The surface grid's share: stacked parameters of the points in flight plus their activations."""
_FALLBACK = 8 << 30


def available_bytes(device: torch.device | str) -> int:
    """Free memory on `device` now, in bytes (CUDA: mem_get_info; CPU: MemAvailable, else free pages, else 8 GiB).

    Args:
        device: a CUDA or CPU device.

    Returns:
        The bytes a new allocation could take without swapping or failing.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK


def budget(device: torch.device | str, share: float, max_memory: int | None = None) -> int:
    """Bytes a job may use on `device`: `max_memory` when given, else `share` of what is free now.

    Args:
        device: where the job allocates.
        share: the fraction of free memory the job may take (one of the *_SHARE constants).
        max_memory: an explicit cap in bytes that replaces the rule.

    Returns:
        The budget in bytes (at least 1).
    """
    if max_memory is not None:
        return max(1, int(max_memory))
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    return max(1, int(available_bytes(device) * share))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) tuple/list/dict; other objects count 0.

    Args:
        obj: a tensor or a nested container of them.

    Returns:
        Σ numel · element size.
    """
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o) for o in obj.values())
    return 0


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """Run `fn`; return its result and the bytes it kept alive.

    CUDA: allocated memory after minus before. CPU: the storages autograd saved for backward while
    `fn` ran (each counted once), which is what a kept graph holds.

    Args:
        fn: the work to measure, e.g. a forward pass whose graph is kept.
        device: where `fn` allocates.

    Returns:
        (fn's result, bytes kept alive by it).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, max(0, torch.cuda.memory_allocated(device) - before)
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())
