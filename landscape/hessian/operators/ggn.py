"""The generalized Gauss-Newton matrix G = Σ_b w_b J_bᵀ (∇²_f ℓ_b) J_b / Σ_b w_b, same interface as H.

J_b is the Jacobian of the model's predictions f on batch b with respect to the parameters, and ∇²_f ℓ_b
the Hessian of the batch-mean loss with respect to those predictions (for cross-entropy the softmax
Hessian diag(p) − p pᵀ per sample or token, for MSE a scaled identity). For a cross-entropy (an HF token task's
own loss, or F.cross_entropy on [N, C] logits) both backends apply ∇²_f ℓ_b analytically, a chunk of tokens
at a time (`output_hessian.py`: no second-order graph over the B×T×V logits); for any other loss, as an exact
Hessian-vector product of the loss in output space (`Objective.loss_of_output`), so any loss works. G is
positive semi-definite when the loss is convex in the predictions (cross-entropy, MSE). Per vector: a tangent
forward pass (J v), the output-space product, and a backward pass (Jᵀ u).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from landscape.hessian.operators.backends import Sizing
from landscape.hessian.operators.flat import Snapshot
from landscape.hessian.operators.operator import CurvatureOperator
from landscape.hessian.operators.output_hessian import cross_entropy_hessian
from landscape.memory import tensor_bytes
from landscape.objective import Batch


class FuncGGN:
    """torch.func: vmapped jvp of the model (J V), the output-space loss Hessian, a vmapped vjp (Jᵀ).

    Args:
        snap: the objective at θ.
        sizing: memory facts (for the lane chunk).
    """

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
        """G_b V for the tangents [k, *shape] per parameter.

        Args:
            batch: the batch.
            tangents: one [k, *shape] tensor per parameter.

        Returns:
            G_b V = J_bᵀ H_out J_b V per parameter.
        """
        snap = self.snap
        names = snap.layout.names
        chunk = self.sizing.lanes(batch.size)

        def f(p: dict[str, Tensor]) -> Tensor:
            return snap.output(p, batch)

        out, pullback = vjp(f, snap.params)
        jv = vmap(lambda t: jvp(f, (snap.params,), (dict(zip(names, t)),))[1], chunk_size=chunk)(tangents)
        analytic = cross_entropy_hessian(snap.objective, out, batch, self.sizing.budget)
        if analytic is not None:
            hjv = analytic.apply(jv)
        else:
            # output space: reverse-over-reverse (∇²_f ℓ is symmetric), which also covers losses such as
            # F.mse_loss whose forward-over-reverse fails in torch 2.13 ("ZeroTensors are immutable")
            _, loss_hvp = vjp(grad(lambda o: snap.objective.loss_of_output(o, batch)), out.detach())
            hjv = vmap(lambda u: loss_hvp(u)[0], chunk_size=chunk)(jv)
        res = vmap(lambda u: pullback(u)[0], chunk_size=chunk)(hjv)
        return [res[n] for n in names]


@dataclass
class JacobianState:
    """A batch's kept graphs: leaves θ, predictions f, the dummy u of Jᵀu, the live Jᵀu, their indices, and the
    output-space Hessian: analytic (cross-entropy), else the detached predictions and ∇_f ℓ_b (create_graph=True)."""

    leaves: list[Tensor]
    out: Tensor
    dummy: Tensor
    jt: list[Tensor]
    live: list[int]
    analytic: Any
    out_d: Tensor | None
    g_out: Tensor | None


class DoubleBackwardGGN:
    """autograd: J v by the double-vjp trick (d/du of Jᵀu), the loss Hessian in output space, then Jᵀ.

    Args:
        snap: the objective at θ.
        sizing: memory facts (state size).
    """

    compilable = True
    """torch.compile captures the output-space part around the kept graph's backward (`compiled.py`)."""

    def __init__(self, snap: Snapshot, sizing: Sizing):
        self.snap, self.sizing = snap, sizing

    def prepare(self, batch: Batch) -> JacobianState:
        """The batch's graphs (see `JacobianState`).

        Args:
            batch: the prepared batch.

        Returns:
            The Jacobian state.
        """
        leaves = {n: p.detach().requires_grad_() for n, p in self.snap.params.items()}
        out = self.snap.output(leaves, batch)
        dummy = torch.zeros_like(out, requires_grad=True)
        jt = torch.autograd.grad(out, list(leaves.values()), dummy, create_graph=True, allow_unused=True)
        live = [i for i, g in enumerate(jt) if g is not None and g.requires_grad]
        analytic = cross_entropy_hessian(self.snap.objective, out, batch, self.sizing.budget)
        out_d = g_out = None
        if analytic is None:
            out_d = out.detach().requires_grad_()
            (g_out,) = torch.autograd.grad(self.snap.objective.loss_of_output(out_d, batch), out_d, create_graph=True)
        return JacobianState(list(leaves.values()), out, dummy, [jt[i] for i in live], live, analytic, out_d, g_out)

    def state_bytes(self, state: JacobianState, n: int) -> int:
        """Bytes the kept graphs hold (the plan's per-sample measurement × n).

        Args:
            state: the Jacobian state.
            n: its samples.

        Returns:
            Bytes.
        """
        return self.sizing.state_bytes_per_sample * n

    def apply(self, state: JacobianState, tangents: list[Tensor]) -> list[Tensor]:
        """G_b V, one vector at a time through the kept graphs.

        Args:
            state: the batch's Jacobian state.
            tangents: one [k, *shape] tensor per parameter.

        Returns:
            G_b V = J_bᵀ H_out J_b V per parameter.
        """
        k = tangents[0].shape[0]
        res = [torch.zeros_like(t) for t in tangents]
        if not state.jt or (state.analytic is None and not state.g_out.requires_grad):
            return res
        for i in range(k):
            (jv,) = torch.autograd.grad(state.jt, state.dummy, [tangents[j][i] for j in state.live],
                                        retain_graph=True)
            if state.analytic is not None:
                hjv = state.analytic.apply(jv.unsqueeze(0))[0]
            else:
                (hjv,) = torch.autograd.grad(state.g_out, state.out_d, jv, retain_graph=True)
            for j, r in enumerate(torch.autograd.grad(state.out, state.leaves, hjv, retain_graph=True,
                                                      allow_unused=True)):
                if r is not None:
                    res[j][i] = r
        return res


class GGNOperator(CurvatureOperator):
    """G = Σ_b w_b J_bᵀ ∇²_f ℓ_b J_b / Σ_b w_b over the data; the same arguments and methods as
    `HessianOperator` (see `CurvatureOperator`)."""

    _backends = {"func": FuncGGN, "double_backward": DoubleBackwardGGN}
