"""Gradient-norm preservation per block (SPEC C.4): ‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖ and r_l = their ratio.

Norms are Frobenius norms over the whole batch tensor. Gradients are read by tensor hooks on the
block's input and output (registered in the block's forward hook), so they are exactly the
gradients the user's own backward computes; nothing is retained and no `.grad` is created. A block
that returns several tensors gets the norm of their norms, as `torch.nn.utils.clip_grad_norm_`
combines parameter norms: ‖(g_1, ..., g_k)‖ = sqrt(Σ_i ‖g_i‖²). Several backward passes inside one
probe add up in the same way, as if their tensors were one batch (with the losses summed).

By C.1 the ratio is bounded by the block Jacobian J_l: r_l ∈ [σ_min(J_lᵀ), σ_max(J_l)]
(`landscape.probes.jacobian`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

GRAD_METRICS = ("grad_norm_in", "grad_norm_out", "grad_ratio")


def combined_norm(tensors: Iterable[Tensor]) -> Tensor:
    """sqrt(Σ_i ‖t_i‖²_F) in float64, computed as clip_grad does: one fused norm per device."""
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t.detach())
    if not by_device:
        return torch.zeros((), dtype=torch.float64)
    first = next(iter(by_device))
    norms = [n.to(first, torch.float64) for ts in by_device.values() for n in torch._foreach_norm(ts)]
    return torch.linalg.vector_norm(torch.stack(norms))


def tensors_in(obj) -> list[Tensor]:
    """All tensors in a (nested) tuple / list / dict output, in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensors_in(item)]
    return []


class GradNormCollector:
    """Accumulates Σ‖∂L/∂x‖² per (block, side) from tensor hooks; side 0 = input, 1 = output.

    A hook only stores its gradient (a C-level `list.__setitem__`, no Python frame); the norms are
    taken in one fused call per device at `flush`. When block l's input is block l−1's output
    (the usual chain) one hook serves both. With `keep_tensors`, the hooked tensors of the current
    pass are kept in `pass_tensors` (for `torch.autograd.grad(loss, pass_tensors)`).
    """

    def __init__(self, n_blocks: int):
        self.n_blocks = n_blocks
        self._slots: list[Tensor | None] = []
        self._rows: list[list[int]] = []
        self._handles: list[RemovableHandle] = []
        self._acc: Tensor | None = None
        self.seen = [False] * (2 * n_blocks)
        self._last: tuple[Tensor, int] | None = None
        self.keep_tensors = False
        self.pass_tensors: list[Tensor] = []

    def _watch(self, t: Tensor, row: int) -> int:
        k = len(self._slots)
        self._slots.append(None)
        self._rows.append([row])
        self._handles.append(t.register_hook(partial(self._slots.__setitem__, k)))
        if self.keep_tensors:
            self.pass_tensors.append(t)
        return k

    def watch(self, block: int, x, output) -> None:
        """Hook the block's input tensor `x` and every output tensor that requires grad."""
        if isinstance(x, Tensor) and x.requires_grad:
            if self._last is not None and x is self._last[0]:
                self._rows[self._last[1]].append(2 * block)
            else:
                self._watch(x, 2 * block)
        outs = [t for t in tensors_in(output) if t.requires_grad]
        slots = [self._watch(t, 2 * block + 1) for t in outs]
        self._last = (outs[0], slots[0]) if outs else None

    def new_pass(self) -> None:
        """Forget the chain link and the tensors of the previous forward pass."""
        self._last = None
        self.pass_tensors = []

    @torch.no_grad()
    def flush(self) -> None:
        """Add the squared norms of every gradient received so far to the accumulators."""
        filled = [k for k, g in enumerate(self._slots) if g is not None]
        if not filled:
            return
        by_device: dict[torch.device, list[int]] = {}
        for k in filled:
            by_device.setdefault(self._slots[k].device, []).append(k)
        for device, ks in by_device.items():
            if self._acc is None:
                self._acc = torch.zeros(2 * self.n_blocks, dtype=torch.float64, device=device)
            norms = torch.stack(torch._foreach_norm([self._slots[k].detach() for k in ks]))
            sq = norms.to(self._acc.device, torch.float64).square()
            rows = [r for k in ks for r in self._rows[k]]
            reps = [i for i, k in enumerate(ks) for _ in self._rows[k]]
            self._acc.index_add_(0, torch.tensor(rows, device=self._acc.device),
                                 sq[torch.tensor(reps, device=sq.device)])
            for r in rows:
                self.seen[r] = True
        for k in filled:
            self._slots[k] = None

    def norms(self, scale: float = 1.0) -> Tensor:
        """[n_blocks, 2] float64 tensor of (‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖), each squared norm × `scale`."""
        self.flush()
        if self._acc is None:
            return torch.zeros(self.n_blocks, 2, dtype=torch.float64)
        return (self._acc * scale).sqrt().view(self.n_blocks, 2).cpu()

    def remove(self) -> None:
        """Remove every tensor hook this collector registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.new_pass()
