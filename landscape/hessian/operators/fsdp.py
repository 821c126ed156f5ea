"""The Hessian of an FSDP2-sharded model (`torch.distributed.fsdp.fully_shard`) under torchrun, every vector held
as this process's shards.

    op = FSDPHessianOperator(model, loss_fn, my_batches)   # model: fully_shard'ed; my_batches: this rank's data
    sd = slq_density(op, iters=80, vectors=4, top_k=5)      # the solvers, unchanged

FSDP2 gathers each wrapped module's parameters into separate unsharded tensors for its forward, so
`torch.autograd.grad` with respect to the sharded parameters fails ("appears to not have been used in the
graph") and no double backward exists; `.backward()` into the shards' `.grad` works. The products are
therefore central differences of first-order gradients (`finite_difference.py`: the step calibrated on the
first product, the error estimated from a Richardson pair and refused above its tolerance):

    H v ≈ (∇L(θ + h v) − ∇L(θ − h v)) / 2h,    ∇L(θ) = Σ_r Σ_b w_b ∇ℓ_b(θ) / Σ_r Σ_b w_b

Each gradient is one pass over this rank's batches: every backward reduce-scatters the gradient (FSDP
averages it over the W ranks, so rank r's batch-mean loss is scaled by w_b·W before its backward, and the
shard gradient is divided by the global Σ w_b after the pass). All ranks run the same number of backwards:
a rank with fewer batches runs its first batch again with weight 0. The perturbation θ ± h v is written into
the shards (each rank its part of v) and θ restored exactly after every product; the caller's `.grad` are
restored too. So the model is written to during a product, never left changed.

Vectors are this rank's part (`dim` = local entries; `sharding` = the `ShardLayout`, whose `dim` is the full
size): the solvers complete their inner products and norms across ranks in float64 and draw the same random
vectors an unsharded run draws. Products run in the model's compute dtype (FSDP's MixedPrecisionPolicy
param_dtype, or `autocast`); vectors and products are in the shards' dtype (float32 for a bf16 compute).
Cost per vector: 2 gradient passes (forward + backward, one all-gather and one reduce-scatter per wrapped
module). Construction: 3 power iterations and the step's scan (`finite_difference.scan_step`, about 20 passes).
Memory: the model's own FSDP memory plus 3 local shards (θ, θ ± h v, a gradient) beside the k·local_dim of
the vectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed as _dist
from landscape.errors import LandscapeError
from landscape.hessian.operators import finite_difference as fd
from landscape.hessian.operators.checks import check_fixed
from landscape.hessian.operators.shards import ShardLayout, fsdp_modules, reshard
from landscape.hessian.solvers.lanczos import rademacher
from landscape.hessian.solvers.protocol import sharded
from landscape.modes import preserved_modes
from landscape.objective import Batch, Objective

__all__ = ["FSDPHessianOperator", "is_fsdp"]


def is_fsdp(model: Any) -> bool:
    """Whether a model was sharded by FSDP2.

    Args:
        model: an nn.Module or an Objective.

    Returns:
        True when some of its modules are wrapped by `fully_shard`.
    """
    model = model.model if isinstance(model, Objective) else model
    return isinstance(model, nn.Module) and bool(fsdp_modules(model))


class FSDPHessianOperator:
    """H = Σ_r Σ_b w_b ∇²ℓ_b / Σ w_b of an FSDP2 model over all ranks' batches, on sharded vectors.

    Args:
        model: an nn.Module whose measured parameters `fully_shard` sharded (or an Objective of one).
        loss_fn: `loss_fn(predictions, targets)` → batch mean; None: the model's own loss (HF models).
        data: this rank's batches, in any form `landscape.objective.Batches` accepts.
        params: the differentiated parameters (names, patterns or tensors; default: all with requires_grad).
        autocast: run the forward and backward under torch.autocast in this dtype (e.g. torch.bfloat16).
        max_error: the largest Richardson error estimate accepted (default: finite_difference.TOLERANCE;
            math.inf measures whatever the dtype gives, as the bf16 study does).
        seed: the trial vector's seed.
    """

    def __init__(self, model: nn.Module | Objective, loss_fn: Any = None, data: Any = None,
                 params: Any = None, *, autocast: torch.dtype | None = None, max_error: float = fd.TOLERANCE,
                 seed: int = 0):
        self.objective = Objective.of(model, loss_fn, data, params)
        self.model = self.objective.model
        if not is_fsdp(self.model):
            raise LandscapeError("FSDPHessianOperator needs a model wrapped by torch.distributed.fsdp.fully_shard")
        check_fixed(self.model)
        self._modes = [(m, m.training) for m in self.model.modules()]
        self.layout = ShardLayout(self.model, self.objective.param_names)
        self.sharding = self.layout
        theta = self.layout.local_tensors(self.model)
        self.dim: int = self.layout.local_dim
        self.dtype: torch.dtype = theta[0].dtype
        self.device: torch.device = theta[0].device
        self.autocast, self.max_error = autocast, max_error
        self.n_products = 0
        self._batches = list(self.objective.batches(self.device))
        if not self._batches:
            raise LandscapeError(f"rank {_dist.rank()} has no batches: every rank needs a share of the data")
        self._weights = [self.objective.weight(b) for b in self._batches]
        counts = torch.tensor([len(self._batches)], dtype=torch.int64, device=_dist.comm_device())
        self._steps = int(_dist.all_reduce_max(counts)[0])
        self._total = self._global_weight(self._weights)
        self.compute_dtype = self._measure_compute_dtype()
        self._calibrate(seed)

    # ---- the solvers' interface -------------------------------------------------------------------

    backend = "finite_difference"

    @property
    def n_samples(self) -> int:
        """Σ w_b over all ranks' batches (samples, or tokens for token losses), known at construction."""
        return self._total

    @property
    def param_names(self) -> list[str]:
        """The differentiated parameters, in flat-vector order."""
        return list(self.layout.names)

    def info(self) -> dict:
        """How the operator runs.

        Returns:
            backend, ranks, dim (full) and local_dim, dtype and compute_dtype, device, and the finite-difference
            step, error estimate and tolerance.
        """
        return {"backend": "finite_difference", "sharded": "fsdp", "ranks": self.layout.world,
                "dim": self.layout.dim, "local_dim": self.dim, "dtype": _name(self.dtype),
                "compute_dtype": _name(self.compute_dtype), "device": str(self.device),
                "finite_difference": {"step": self.delta, "error_estimate": self.error_estimate,
                                      "tolerance": self.max_error}}

    def matmat(self, V: Tensor) -> Tensor:
        """H V, one vector after another (a collective: every rank calls it with its part).

        Args:
            V: this rank's part [local_dim, k] of k vectors.

        Returns:
            This rank's part [local_dim, k] of H V, in the shards' dtype.
        """
        V = torch.as_tensor(V)
        if V.dim() != 2 or V.shape[0] != self.dim:
            raise LandscapeError(f"matmat: expected a [{self.dim}, k] block (this rank's entries), "
                                 f"got shape {tuple(V.shape)}")
        rows = V.to(device=self.device, dtype=self.dtype).T
        out = torch.empty_like(rows)
        with self._writing() as theta:
            gradient = self._gradient_fn(range(self._steps), self._total)
            for i in range(rows.shape[0]):
                v = self.layout.split(rows[i : i + 1])
                d = fd.central_difference(gradient, theta, [t[0] for t in v], self.delta, self.layout.norm)
                out[i] = self.layout.join([t.unsqueeze(0) for t in d])[0]
        self.n_products += rows.shape[0]
        return out.T

    def gradient(self) -> Tensor:
        """The data-set mean gradient over all ranks' batches (a collective: one gradient pass).

        Returns:
            This rank's part [local_dim] of ∇L.
        """
        with self._writing() as theta:
            g = self._gradient_fn(range(self._steps), self._total)(theta)
        return self.layout.join([t.unsqueeze(0) for t in g])[0]

    def batch_quadratic_forms(self, V: Tensor, pieces: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Per-batch quadratic forms for the data-noise error bar (`solvers.errorbars`; a collective).

        Every backward reduce-scatters over the ranks, so a batch here is one step j of the data pass: the union
        of the ranks' j-th batches (each cut into `pieces`).

        Args:
            V: this rank's part [local_dim, k] of k vectors.
            pieces: cut each batch into this many pieces along its samples.

        Returns:
            (w_j [B], v_iᵀ H_j v_i [B, k]), the same on every rank.
        """
        rows = torch.as_tensor(V).to(device=self.device, dtype=self.dtype).reshape(self.dim, -1).T
        weights, forms = [], []
        with self._writing() as theta:
            for j in range(self._steps):
                for piece in range(pieces):
                    total = self._global_weight([self._step_batch(j, (piece, pieces))[1]])
                    if total == 0:
                        continue
                    grad = self._gradient_fn([j], total, (piece, pieces))
                    q = []
                    for i in range(rows.shape[0]):
                        v = [t[0] for t in self.layout.split(rows[i : i + 1])]
                        d = fd.central_difference(grad, theta, v, self.delta, self.layout.norm)
                        q.append(sum(float((a.double() * b.double()).sum()) for a, b in zip(d, v)))
                    part = torch.tensor(q, dtype=torch.float64, device=_dist.comm_device())
                    weights.append(total)
                    forms.append(self.layout.all_reduce(part).cpu())
        return np.asarray(weights), torch.stack(forms).numpy()

    # ---- the data pass ----------------------------------------------------------------------------

    def _global_weight(self, weights: Sequence[int]) -> int:
        """Σ over ranks of Σ weights (exact: integers in a float64 all_reduce)."""
        t = torch.tensor([float(sum(weights))], dtype=torch.float64, device=_dist.comm_device())
        return int(round(float(_dist.all_reduce_sum(t)[0])))

    def _gradient_fn(self, steps: Sequence[int] | range, total: int, piece: tuple[int, int] = (0, 1)):
        """θ (local parts) ↦ this rank's part of Σ_{steps} Σ_r w ∇ℓ / total, written into the shards."""

        def gradient(theta: list[Tensor]) -> list[Tensor]:
            self._write(theta)
            for p in self.model.parameters():
                p.grad = None
            for j in steps:
                batch, w = self._step_batch(j, piece)
                scale = w * self.layout.world / total
                with self._compute():
                    loss = self.objective.loss(batch)
                (loss * scale).backward()
            reshard(self.model)
            out = []
            for n, shape in zip(self.layout.names, self.layout.local_shapes):
                g = self.model.get_parameter(n).grad
                out.append(torch.zeros(shape, dtype=self.dtype, device=self.device) if g is None
                           else g.to_local().to(self.dtype))
            return out

        return gradient

    def _step_batch(self, step: int, piece: tuple[int, int]) -> tuple[Batch, int]:
        """This rank's batch (or piece) of a step and its weight; past its batches, its first with weight 0."""
        if step >= len(self._batches):
            return self._batches[0], 0
        batch = self._batches[step]
        if piece[1] > 1:
            parts = batch.split(pieces=piece[1])
            if piece[0] >= len(parts):
                return parts[0], 0
            batch = parts[piece[0]]
        return batch, self.objective.weight(batch)

    def _compute(self):
        """The autocast context of every forward (none without `autocast`)."""
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _write(self, theta: list[Tensor]) -> None:
        """θ (local parts) into the shards."""
        with torch.no_grad():
            for t, value in zip(self.layout.local_tensors(self.model), theta):
                t.copy_(value)

    @contextmanager
    def _writing(self) -> Iterator[list[Tensor]]:
        """Products write θ ± h v into the shards and gradients into .grad: yield a copy of θ, then restore θ,
        the caller's gradients and train/eval flags, whatever happens."""
        theta = [t.detach().clone() for t in self.layout.local_tensors(self.model)]
        saved = [(p, p.grad) for p in self.model.parameters()]
        try:
            with torch.enable_grad(), preserved_modes(self.model):
                for m, flag in self._modes:
                    m.training = flag
                yield theta
        finally:
            self._write(theta)
            for p, g in saved:
                p.grad = g

    # ---- construction ------------------------------------------------------------------------------

    def _measure_compute_dtype(self) -> torch.dtype:
        """The dtype the forward computes in: the autocast dtype, else the gathered parameters' dtype seen
        inside the first forward (FSDP's param_dtype under a MixedPrecisionPolicy)."""
        if self.autocast is not None:
            return self.autocast
        seen: list[torch.dtype] = []
        leaf = next(m for m in self.model.modules() if any(True for _ in m.parameters(recurse=False)))
        hook = leaf.register_forward_pre_hook(
            lambda m, args: seen.append(next(m.parameters(recurse=False)).dtype) if not seen else None)
        try:
            with torch.no_grad(), preserved_modes(self.model, train=False):
                self.objective.check(self._batches[0])
        finally:
            hook.remove()
            reshard(self.model)
        return seen[0] if seen else self.dtype

    def _calibrate(self, seed: int) -> None:
        """The finite-difference step, scanned along a vector turned toward the top eigenvector by power
        iterations from a Rademacher vector (the same on every rank), with its Richardson error estimate;
        a LandscapeError on every rank when it exceeds `max_error`."""
        gen = torch.Generator().manual_seed(seed)
        with sharded(self):
            v = rademacher(1, self.dim, gen).to(device=self.device, dtype=self.dtype)
        parts = [t[0] for t in self.layout.split(v)]
        with self._writing() as theta:
            gradient = self._gradient_fn(range(self._steps), self._total)
            norm = self.layout.norm
            top = fd.top_direction(gradient, theta, parts, self.compute_dtype, norm)
            self.delta, self.error_estimate = fd.scan_step(gradient, theta, top, self.compute_dtype, norm)
        if not self.error_estimate <= self.max_error:
            raise LandscapeError(
                f"finite-difference products of this FSDP model are too inaccurate: their Richardson error "
                f"estimate is {self.error_estimate:.1e} of their norm (tolerance {self.max_error:.0e}, "
                f"{_name(self.compute_dtype)} compute, step δ = {self.delta:.2e}); compute in float32 "
                "(MixedPrecisionPolicy(param_dtype=torch.float32)), or check for a saturated loss")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
