"""Plumbing: memory budgets and measuring what a prepared batch holds.

Budget: `max_memory` bytes when given, else 80% of the free CUDA memory (torch.cuda.mem_get_info)
or 50% of the host's available memory (/proc/meminfo MemAvailable) on a CPU. Half the budget may
hold cached per-batch graphs; the other half is for one batch's products.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def available_bytes(device: torch.device) -> int:
    """Free memory on `device` now (CUDA: mem_get_info; CPU: MemAvailable, else free physical pages)."""
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
        return 8 << 30


def budget(device: torch.device, max_memory: int | None) -> int:
    """Bytes the operator may use on `device`."""
    if max_memory is not None:
        return int(max_memory)
    return int(available_bytes(device) * (0.8 if device.type == "cuda" else 0.5))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) tuple/list/dict."""
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
