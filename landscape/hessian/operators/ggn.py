"""The generalized Gauss-Newton matrix G = (1/N) Σ_b n_b J_bᵀ (∇²_f L_b) J_b, same interface as H.

J_b is the Jacobian of the model's outputs f on batch b with respect to the parameters, and ∇²_f L_b
the Hessian of the batch-mean loss with respect to those outputs (for cross-entropy the softmax
Hessian diag(p) − p pᵀ per sample, for MSE a scaled identity). Both backends apply ∇²_f L_b as an
exact Hessian-vector product of the loss in output space, so any loss works; G is positive
semi-definite when the loss is convex in the outputs (cross-entropy, MSE). Per vector: a tangent
forward pass (J v), the output-space product, and a backward pass (Jᵀ u).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from landscape.hessian.operators import data as _data
from landscape.hessian.operators.operator import CurvatureOperator


class _FuncGGN:
    """torch.func: vmapped jvp of the model (J V), the output-space loss Hessian, a vmapped vjp (Jᵀ)."""

    def __init__(self, op: CurvatureOperator):
        self.op = op

    def prepare(self, batch: _data.Batch) -> _data.Batch:
        return batch

    def state_bytes(self, state: _data.Batch, n: int) -> int:
        from landscape.memory import tensor_bytes

        return tensor_bytes(state)

    def apply(self, batch: _data.Batch, tangents: list[Tensor]) -> list[Tensor]:
        op = self.op
        names = op.layout.names
        chunk = op.lane_chunk(_data.batch_size(batch[0]))

        def f(p: dict[str, Tensor]) -> Tensor:
            return op.forward(p, batch[0])

        out, pullback = vjp(f, op.params)
        jv = vmap(lambda t: jvp(f, (op.params,), (dict(zip(names, t)),))[1], chunk_size=chunk)(tangents)
        # output space: reverse-over-reverse (∇²_f L is symmetric), which also covers losses such as
        # F.mse_loss whose forward-over-reverse fails in torch 2.13 ("ZeroTensors are immutable")
        _, loss_hvp = vjp(grad(lambda o: op.loss_fn(o, batch[1])), out.detach())
        hjv = vmap(lambda u: loss_hvp(u)[0], chunk_size=chunk)(jv)
        res = vmap(lambda u: pullback(u)[0], chunk_size=chunk)(hjv)
        return [res[n] for n in names]


class _DoubleBackwardGGN:
    """autograd: J v by the double-vjp trick (d/du of Jᵀu), the loss Hessian in output space, then Jᵀ."""

    def __init__(self, op: CurvatureOperator):
        self.op = op

    def prepare(self, batch: _data.Batch) -> tuple:
        leaves = {n: p.detach().requires_grad_() for n, p in self.op.params.items()}
        out = self.op.forward(leaves, batch[0])
        dummy = torch.zeros_like(out, requires_grad=True)
        jt = torch.autograd.grad(out, list(leaves.values()), dummy, create_graph=True, allow_unused=True)
        live = [i for i, g in enumerate(jt) if g is not None and g.requires_grad]
        out_d = out.detach().requires_grad_()
        (g_out,) = torch.autograd.grad(self.op.loss_fn(out_d, batch[1]), out_d, create_graph=True)
        return list(leaves.values()), out, dummy, [jt[i] for i in live], live, out_d, g_out

    def state_bytes(self, state: Any, n: int) -> int:
        return (self.op._state_bytes_per_sample or 0) * n

    def apply(self, state: Any, tangents: list[Tensor]) -> list[Tensor]:
        leaves, out, dummy, jt, live, out_d, g_out = state
        k = tangents[0].shape[0]
        res = [torch.zeros_like(t) for t in tangents]
        if not jt or not g_out.requires_grad:
            return res
        for i in range(k):
            (jv,) = torch.autograd.grad(jt, dummy, [tangents[j][i] for j in live], retain_graph=True)
            (hjv,) = torch.autograd.grad(g_out, out_d, jv, retain_graph=True)
            for j, r in enumerate(torch.autograd.grad(out, leaves, hjv, retain_graph=True, allow_unused=True)):
                if r is not None:
                    res[j][i] = r
        return res


class GGNOperator(CurvatureOperator):
    """G = (1/N) Σ_b n_b J_bᵀ ∇²_f L_b J_b over `data`; the same constructor and methods as
    `HessianOperator` (see there)."""

    _backends = {"func": _FuncGGN, "double_backward": _DoubleBackwardGGN}
