"""Gradient-norm preservation per block (docs/methods.md §C.4): ‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖ and r_l = their ratio.

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
    """sqrt(Σ_i ‖t_i‖²_F) in float64, computed as clip_grad does: one fused norm per device.

    Args:
        tensors: the tensors.

    Returns:
        The norm, a 0-dim float64 tensor (0 for none).
    """
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t.detach())
    if not by_device:
        return torch.zeros((), dtype=torch.float64)
    first = next(iter(by_device))
    norms = [n.to(first, torch.float64) for ts in by_device.values() for n in torch._foreach_norm(ts)]
    return torch.linalg.vector_norm(torch.stack(norms))


def tensors_in(obj) -> list[Tensor]:
    """All tensors in a (nested) tuple / list / dict output, in order.

    Args:
        obj: a module's output.

    Returns:
        The tensors.
    """
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensors_in(item)]
    return []


class GradNormCollector:
    """Accumulates Σ‖∂L/∂x‖² per (block, side) from tensor hooks; side 0 = input, 1 = output.

    A hook only stores its gradient (a C-level `dict.__setitem__`, no Python frame); the norms are
    taken in one fused call per device at `flush`, added into a float64 accumulator, and the slot
    and its hook are dropped, so a probe left attached for a whole training run does constant work
    per step. For a non-leaf tensor the hook is a pre-hook on the node that produced it (half the
    cost of a tensor hook, same gradient), so it fires when the backward pass continues through that
    node, as `loss.backward()` does; a backward stopped at the stream itself
    (`torch.autograd.grad(loss, stream)`) does not reach it. When block l's input is block l−1's
    output (the usual chain) one hook serves both. Slots of a forward whose backward never runs
    are dropped once its graph is freed.
    """

    def __init__(self, n_blocks: int):
        self.n_blocks = n_blocks
        self._next = 0
        self._got: dict[int, object] = {}
        self._rows: dict[int, list[int]] = {}
        self._outnr: dict[int, int | None] = {}
        self._handles: dict[int, RemovableHandle] = {}
        self._sq: Tensor | None = None
        self.seen = [False] * (2 * n_blocks)
        self._last: tuple[Tensor, int] | None = None

    def _watch(self, t: Tensor, row: int) -> int:
        k = self._next
        self._next += 1
        self._rows[k] = [row]
        store = partial(self._got.__setitem__, k)
        node = t.grad_fn
        if node is None:  # a leaf: a tensor hook stores the gradient itself
            self._outnr[k] = None
            self._handles[k] = t.register_hook(store)
        else:  # cheaper: the producing node's pre-hook stores its grad_outputs tuple
            self._outnr[k] = t.output_nr
            self._handles[k] = node.register_prehook(store)
        return k

    def watch(self, block: int, x, output) -> None:
        """Hook the block's input tensor `x` and every output tensor that requires grad.

        Args:
            block: the block's index.
            x: the block's input.
            output: the block's output.
        """
        if isinstance(x, Tensor) and x.requires_grad:
            last = self._last
            if last is not None and x is last[0] and last[1] in self._rows:  # its slot may be flushed already
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

    def _prune(self) -> None:
        """Drop the slots of graphs that are gone (a forward without a backward): their hooks' node is freed."""
        dead = [k for k, h in self._handles.items() if k not in self._got and h.hooks_dict_ref() is None]
        for k in dead:
            del self._handles[k], self._rows[k], self._outnr[k]

    @torch.no_grad()
    def flush(self) -> None:
        """Add the squared norms of every gradient received so far (one fused call per device)."""
        self._prune()
        if not self._got:
            return
        by_device: dict[torch.device, tuple[list[list[int]], list[Tensor]]] = {}
        for k, got in list(self._got.items()):
            del self._got[k]
            self._handles.pop(k).remove()
            rows, outnr = self._rows.pop(k), self._outnr.pop(k)
            g = got if outnr is None else got[outnr]
            if g is not None:
                row_lists, gs = by_device.setdefault(g.device, ([], []))
                row_lists.append(rows)
                gs.append(g)
                for r in rows:
                    self.seen[r] = True
        for row_lists, gs in by_device.values():
            sq = torch.stack(torch._foreach_norm(gs)).to(torch.float64).square()
            if self._sq is None:
                self._sq = torch.zeros(2 * self.n_blocks, dtype=torch.float64, device=sq.device)
            sq = sq.to(self._sq.device)
            if any(len(rows) > 1 for rows in row_lists):  # a slot serving two rows adds to both
                sq = torch.repeat_interleave(sq, torch.tensor([len(r) for r in row_lists], device=sq.device))
            rows = torch.tensor([r for rows in row_lists for r in rows], device=sq.device)
            self._sq.index_add_(0, rows, sq)

    def norms(self, scale: float = 1.0) -> Tensor:
        """[n_blocks, 2] float64 of (‖∂L/∂x_l‖, ‖∂L/∂x_{l+1}‖); each squared norm is multiplied by `scale`.

        Args:
            scale: the factor of each squared norm (e.g. 1/batches²).

        Returns:
            The norms.
        """
        self.flush()
        sq = self._sq.cpu() if self._sq is not None else torch.zeros(2 * self.n_blocks, dtype=torch.float64)
        return (sq * scale).sqrt().view(self.n_blocks, 2)

    def remove(self) -> None:
        """Remove every hook this collector registered and forget gradients not yet flushed."""
        for h in self._handles.values():
            h.remove()
        for d in (self._handles, self._got, self._rows, self._outnr):
            d.clear()
        self.new_pass()
