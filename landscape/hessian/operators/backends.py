"""The two machineries for Hessian-vector products of one batch (the same matrix, different autodiff).

For the batch-mean loss ℓ_b(θ) and k tangents V (per parameter, [k, *shape]):
- `FuncHessian`: H_b V = vmap over the k tangents of jvp(grad ℓ_b) (forward-over-reverse, torch.func);
  the primal is shared by the k lanes, chunked by `Sizing.lanes` to fit the memory budget.
- `DoubleBackwardHessian`: g = ∇ℓ_b with create_graph=True once per batch (`prepare`, kept between calls
  when the operator caches), then H_b V = ∂(gᵀV)/∂θ by backward passes of the gradient graph: on a GPU
  all k vectors in one batched backward (autograd's `is_grads_batched`) where autograd can vmap it; on a
  CPU, or where it cannot, one backward per vector (a batched backward measured 1.05–1.6× slower per
  vector on a CPU — ResNet-18, an MLP — and holds k times the transient memory).

A backend has `prepare(batch) -> state` (work shared by all vectors), `state_bytes(state, n)` and
`apply(state, tangents) -> list of [k, *shape]` (the batch-mean product, per parameter). The GGN's
backends live in `ggn.py`; which backend runs is decided in `plan.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from landscape.hessian.operators.flat import Snapshot
from landscape.memory import tensor_bytes
from landscape.objective import Batch


@dataclass(frozen=True)
class Sizing:
    """Memory facts a backend sizes its work by: bytes a kept per-sample state holds, and the budget.

    Attributes:
        state_bytes_per_sample: bytes of a kept gradient graph per sample (measured by the plan).
        budget: bytes the operator may use (`landscape.memory.budget`).
    """

    state_bytes_per_sample: int
    budget: int

    def lanes(self, n: int) -> int | None:
        """Vectors to process at once on a batch of n samples: the kept state plus about two states of
        tangents per vector must fit in half the budget (None: all at once).

        Args:
            n: the batch's samples.

        Returns:
            The lane count.
        """
        state = self.state_bytes_per_sample * n
        return max(1, int((self.budget // 2 - state) // max(1, 2 * state)))


class FuncHessian:
    """vmap over tangents of jvp(grad(loss)): forward-over-reverse, the primal shared by the k lanes.

    Args:
        snap: the objective at θ.
        sizing: memory facts (for the lane chunk).
    """

    slow_on_cpu: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                     nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    """Module types through which these products measured slower than double backward on a CPU (1.1–5×:
    BENCHMARKS.md, conv + BatchNorm, ResNetV2-8, ResNet-18), never the 20% faster `auto` asks of them; where
    such modules hold most of the parameters, `auto` does not time this backend (planner.py)."""

    compilable = True
    """torch.compile traces the whole product (`compiled.py`)."""

    def __init__(self, snap: Snapshot, sizing: Sizing):
        self.snap, self.sizing = snap, sizing

    def prepare(self, batch: Batch) -> Batch:
        """Nothing is shared between calls but the batch itself.

        Args:
            batch: the prepared batch.

        Returns:
            The batch.
        """
        return batch

    def state_bytes(self, state: Batch, n: int) -> int:
        """Bytes the kept state holds (the batch's tensors).

        Args:
            state: the batch.
            n: its samples (unused).

        Returns:
            Bytes.
        """
        return tensor_bytes(state.tensors())

    def apply(self, batch: Batch, tangents: list[Tensor]) -> list[Tensor]:
        """H_b V for the tangents [k, *shape] per parameter.

        Args:
            batch: the batch.
            tangents: one [k, *shape] tensor per parameter.

        Returns:
            H_b V per parameter, [k, *shape] each.
        """
        snap = self.snap
        g = grad(lambda p: snap.loss(p, batch))
        names = snap.layout.names
        out = vmap(lambda t: jvp(g, (snap.params,), (dict(zip(names, t)),))[1],
                   chunk_size=self.sizing.lanes(batch.size))(tangents)
        return [out[n] for n in names]


@dataclass
class GraphState:
    """A batch's kept gradient graph: the leaves θ, the live gradients ∇ℓ_b (create_graph=True) and their
    indices among the parameters, the batch's sample count, and every parameter's gradient (None where
    the loss does not reach it)."""

    leaves: list[Tensor]
    grads: list[Tensor]
    live: list[int]
    n: int
    every: tuple[Tensor | None, ...]

    @property
    def gradient(self) -> Tensor:
        """The detached flat gradient, assembled when asked (a kept copy would hold dim numbers per cached
        batch beside the graph's own)."""
        return torch.cat([(torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                          for p, g in zip(self.leaves, self.every)])


class DoubleBackwardHessian:
    """autograd: the gradient graph (create_graph=True) once per batch, then batched backwards of it.

    Args:
        snap: the objective at θ.
        sizing: memory facts (state size and lane chunk).
    """

    sequential_devices: tuple[str, ...] = ("cpu",)
    """Device types whose products take one backward per vector (module docstring)."""

    def __init__(self, snap: Snapshot, sizing: Sizing):
        self.snap, self.sizing = snap, sizing
        self._batched: bool | None = None

    def prepare(self, batch: Batch) -> GraphState:
        """The batch's gradient graph (see `GraphState`).

        Args:
            batch: the prepared batch.

        Returns:
            The graph state.
        """
        leaves = {n: p.detach().requires_grad_() for n, p in self.snap.params.items()}
        loss = self.snap.loss(leaves, batch)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return GraphState(list(leaves.values()), [grads[i] for i in live], live, batch.size, grads)

    def state_bytes(self, state: GraphState, n: int) -> int:
        """Bytes a kept gradient graph holds (the plan's per-sample measurement × n).

        Args:
            state: the graph state.
            n: its samples.

        Returns:
            Bytes.
        """
        return self.sizing.state_bytes_per_sample * n

    def apply(self, state: GraphState, tangents: list[Tensor]) -> list[Tensor]:
        """H_b V: backwards of the kept gradient graph, `Sizing.lanes` vectors per batched backward.

        Args:
            state: the batch's graph state.
            tangents: one [k, *shape] tensor per parameter.

        Returns:
            H_b V per parameter, [k, *shape] each.
        """
        k = tangents[0].shape[0]
        if k == 1 and state.grads:  # the products themselves, without a copy into an output buffer
            hv = _hvp(state, tangents, 0)
            return [torch.zeros_like(t) if h is None else h.unsqueeze(0) for t, h in zip(tangents, hv)]
        out = [torch.zeros_like(t) for t in tangents]
        if not state.grads:
            return out
        sequential = self._batched is False or self.snap.device.type in self.sequential_devices
        chunk = 1 if sequential else min(k, self.sizing.lanes(state.n) or k)
        for lo in range(0, k, chunk):
            hi = min(k, lo + chunk)
            if hi - lo > 1 and self._batched is not False:
                try:
                    hv = torch.autograd.grad(state.grads, state.leaves, [tangents[j][lo:hi] for j in state.live],
                                             retain_graph=True, allow_unused=True, is_grads_batched=True)
                    self._batched = True
                    _write(out, hv, lo, hi)
                    continue
                except (RuntimeError, NotImplementedError):  # an op autograd cannot vmap: one vector at a time
                    self._batched = False
            for i in range(lo, hi):
                _write(out, [None if h is None else h.unsqueeze(0) for h in _hvp(state, tangents, i)], i, i + 1)
        return out


def _hvp(state: GraphState, tangents: list[Tensor], i: int) -> tuple[Tensor | None, ...]:
    """H_b v_i per parameter (None where the product does not reach): one backward of the kept graph."""
    return torch.autograd.grad(state.grads, state.leaves, [tangents[j][i] for j in state.live],
                               retain_graph=True, allow_unused=True)


def _write(out: list[Tensor], hv: Any, lo: int, hi: int) -> None:
    """out[j][lo:hi] = hv[j] for the parameters that received a product."""
    for j, h in enumerate(hv):
        if h is not None:
            out[j][lo:hi] = h
