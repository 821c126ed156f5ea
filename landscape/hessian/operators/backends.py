"""The two machineries for Hessian-vector products of one batch (the same matrix, different autodiff).

For the batch-mean loss L_b(θ) and k tangents V (per parameter, [k, *shape]):
- `FuncHessian`: H_b V = vmap over the k tangents of jvp(grad L_b) (forward-over-reverse, torch.func);
  the primal is shared by the k lanes, chunked by `op.lane_chunk` to fit the memory budget.
- `DoubleBackwardHessian`: g = ∇L_b with create_graph=True once per batch (`prepare`, kept between calls
  when the operator caches), then H_b v = ∂(gᵀv)/∂θ by one backward of the gradient graph per vector.

A backend has `prepare(batch) -> state` (work shared by all vectors), `state_bytes(state, n)` and
`apply(state, tangents) -> list of [k, *shape]` (the batch-mean product, per parameter). The GGN's
backends live in `ggn.py`; which backend runs is decided in `_plan.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from landscape import memory as _memory
from landscape.hessian.operators import data as _data

if TYPE_CHECKING:
    from landscape.hessian.operators.operator import CurvatureOperator


class FuncHessian:
    """vmap over tangents of jvp(grad(loss)): forward-over-reverse, the primal shared by the k lanes."""

    def __init__(self, op: CurvatureOperator):
        self.op = op

    def prepare(self, batch: _data.Batch) -> _data.Batch:
        return batch

    def state_bytes(self, state: _data.Batch, n: int) -> int:
        return _memory.tensor_bytes(state)

    def apply(self, batch: _data.Batch, tangents: list[Tensor]) -> list[Tensor]:
        op = self.op
        g = grad(lambda p: op.loss(p, batch))
        names = op.layout.names
        chunk = op.lane_chunk(_data.batch_size(batch[0]))
        out = vmap(lambda t: jvp(g, (op.params,), (dict(zip(names, t)),))[1], chunk_size=chunk)(tangents)
        return [out[n] for n in names]


class DoubleBackwardHessian:
    """autograd: the gradient graph (create_graph=True) once per batch, one backward of it per vector."""

    def __init__(self, op: CurvatureOperator):
        self.op = op

    def prepare(self, batch: _data.Batch) -> tuple[list[Tensor], list[Tensor], list[int]]:
        leaves = {n: p.detach().requires_grad_() for n, p in self.op.params.items()}
        loss = self.op.loss(leaves, batch)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return list(leaves.values()), [grads[i] for i in live], live

    def state_bytes(self, state: Any, n: int) -> int:
        return (self.op._state_bytes_per_sample or 0) * n

    def apply(self, state: Any, tangents: list[Tensor]) -> list[Tensor]:
        leaves, grads, live = state
        k = tangents[0].shape[0]
        out = [torch.zeros_like(t) for t in tangents]
        if not grads:
            return out
        for i in range(k):
            hv = torch.autograd.grad(
                grads, leaves, [tangents[j][i] for j in live], retain_graph=True, allow_unused=True
            )
            for j, h in enumerate(hv):
                if h is not None:
                    out[j][i] = h
        return out
