"""Gradient-norm preservation per block (SPEC C.4): ‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖ and r_l = their ratio.

Norms are Frobenius norms over the whole batch tensor. Gradients are read by backward hooks on the
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
    taken in one fused call per device at `flush`. For a non-leaf tensor the hook is a pre-hook on
    the node that produced it (half the cost of a tensor hook, same gradient), so it fires when the
    backward pass continues through that node, as `loss.backward()` does; a backward stopped at the
    stream itself (`torch.autograd.grad(loss, stream)`) does not reach it. When block l's input is
    block l−1's output (the usual chain) one hook serves both.
    """

    def __init__(self, n_blocks: int):
        self.n_blocks = n_blocks
        self._slots: list = []
        self._rows: list[list[int]] = []
        self._outnr: list[int | None] = []
        self._handles: list[RemovableHandle] = []
        self._norms: list[tuple[list[list[int]], Tensor]] = []
        self.seen = [False] * (2 * n_blocks)
        self._last: tuple[Tensor, int] | None = None

    def _watch(self, t: Tensor, row: int) -> int:
        k = len(self._slots)
        self._slots.append(None)
        self._rows.append([row])
        store = partial(self._slots.__setitem__, k)
        node = t.grad_fn
        if node is None:  # a leaf: a tensor hook stores the gradient itself
            self._outnr.append(None)
            self._handles.append(t.register_hook(store))
        else:  # cheaper: the producing node's pre-hook stores its grad_outputs tuple
            self._outnr.append(t.output_nr)
            self._handles.append(node.register_prehook(store))
        return k

    def watch(self, block: int, x, output) -> None:
        """Hook the block's input tensor `x` and every output tensor that requires grad."""
        if isinstance(x, Tensor) and x.requires_grad:
            last = self._last
            if last is not None and x is last[0]:
                self._rows[last[1]].append(2 * block)
            else:
                self._watch(x, 2 * block)
        outs = [output] if isinstance(output, Tensor) else tensors_in(output)
        self._last = None
        for t in outs:
            if t.requires_grad:
                k = self._watch(t, 2 * block + 1)
                if self._last is None:
                    self._last = (t, k)

    def new_pass(self) -> None:
        """Forget the chain link to the previous forward pass."""
        self._last = None

    @torch.no_grad()
    def flush(self) -> None:
        """Take the norms of every gradient received so far (one fused call per device)."""
        by_device: dict[torch.device, tuple[list[int], list[Tensor]]] = {}
        for k, got in enumerate(self._slots):
            if got is None:
                continue
            self._slots[k] = None
            g = got if self._outnr[k] is None else got[self._outnr[k]]
            if g is not None:
                ks, gs = by_device.setdefault(g.device, ([], []))
                ks.append(k)
                gs.append(g)
        for ks, gs in by_device.values():
            self._norms.append(([self._rows[k] for k in ks], torch.stack(torch._foreach_norm(gs))))
            for k in ks:
                for r in self._rows[k]:
                    self.seen[r] = True

    def norms(self, scale: float = 1.0) -> Tensor:
        """[n_blocks, 2] float64 of (‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖); each squared norm is multiplied by `scale`."""
        self.flush()
        sq = [0.0] * (2 * self.n_blocks)
        for rows, norms in self._norms:
            for row_list, v in zip(rows, norms.double().square().tolist()):
                for r in row_list:
                    sq[r] += v
        return (torch.tensor(sq, dtype=torch.float64) * scale).sqrt().view(self.n_blocks, 2)

    def remove(self) -> None:
        """Remove every tensor hook this collector registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.new_pass()
