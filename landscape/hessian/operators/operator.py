"""The public curvature-operator API: a data-set curvature matrix applied to k vectors per data pass.

    H = Σ_b w_b ∇²_θ ℓ_b(θ) / Σ_b w_b     ℓ_b the batch-mean loss, w_b its samples or tokens
                                           (`landscape.objective.Objective`: the data-set mean)

over the chosen parameters θ (flattened in `named_parameters()` order). `matmat(V)` applies H to the
k columns of V in one pass over the data: per batch one primal pass (forward and backward) is shared
by all k vectors, then each vector costs a tangent pass (about two gradients of arithmetic).

This module holds the operator's interface and its data pass; the rest lives beside it: `backends.py`
(Hessian) and `ggn.py` (GGN): the per-batch product machineries; `plan.py`: the frozen `Plan` made at
construction (backend, sizing, attention kernel, merging; the checks of `checks.py`); `flat.py`: the
objective frozen at θ and the flat layout.

Under torch.distributed (`distributed=None`: whenever a process group of several ranks is active) each
rank passes its own shard of the samples as `data`: a product sums w_b·H_b V over the rank's batches,
then one all_reduce per data pass adds the [k, dim] sums of all ranks together with the weights,
and divides by the global Σ w_b. Planning decisions are agreed across ranks and a failure on one rank is
raised on all, so every rank applies the same matrix and runs the same (seeded) iterations.

The model is never written to: parameters and buffers are snapshotted (in `dtype`), no `.grad` is
set, and each product runs with the train/eval flags the model had at construction, restoring the
caller's flags afterwards. A model in train mode with BatchNorm or dropout is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed as _dist
from landscape import memory
from landscape.errors import LandscapeError
from landscape.hessian.operators.backends import DoubleBackwardHessian, FuncHessian
from landscape.hessian.operators.budgeted import FirstPassChecks
from landscape.hessian.operators.checks import check_fixed
from landscape.hessian.operators.compiled import compile_backend, compile_info
from landscape.hessian.operators.finite_difference import FiniteDifferenceHessian
from landscape.hessian.operators.flat import Snapshot
from landscape.hessian.operators.plan import Request, make_plan
from landscape.modes import preserved_modes
from landscape.objective import Batch, Objective, concat

__all__ = ["BACKENDS", "CurvatureOperator", "HessianOperator"]

BACKENDS = ("auto", "func", "double_backward", "finite_difference")


class CurvatureOperator:
    """A symmetric dim×dim curvature matrix averaged over the objective's data; subclasses set `_backends`.

    A backend has `prepare(batch) -> state` (work shared by all vectors), `state_bytes(state, n)` and
    `apply(state, tangents) -> list of [k, *shape]` (the batch-mean product, per parameter).

    Args:
        model: an nn.Module, or an `Objective` (then leave loss_fn, data and params out).
        loss_fn: `loss_fn(predictions, targets)` → batch mean; None: the model's own loss (HF models).
        data: any form `landscape.objective.Batches` accepts (tensors, (X, y), DataLoader, dict batches).
        params: the differentiated parameters (names, patterns or tensors; default: all with requires_grad).
        backend: "auto" (timed on the first batch), "func", "double_backward", or (HessianOperator)
            "finite_difference": central differences of first-order gradients (`finite_difference.py`), for
            kernels without a second derivative; "auto" takes it only when both exact backends fail.
        dtype: compute in this precision (e.g. torch.float64) without touching the model.
        max_memory: bytes the operator may use (default: `landscape.memory.budget`'s operator share).
        cache: keep per-batch states (gradient graphs) between calls (None: when they fit in half the budget).
        merge_batches: concatenate batches (None: when samples are independent and memory allows).
        check_deterministic: compute two products of one vector on the first batch and require equality.
        check_symmetric: require uᵀHv = vᵀHu on trial products (with a named backend and both checks off,
            no trial product is made: construction costs one prepared batch, kept for the first pass).
        seed: the trial vectors' seed.
        distributed: sum over the ranks of torch.distributed (None: when several ranks are active).
        autocast: run every forward and backward under torch.autocast in this dtype (e.g. torch.bfloat16, as
            mixed-precision training does): products in that compute dtype, parameters and products in `dtype`
            (docs/methods.md §E.9 measures what bf16 does to the spectrum).
        compile: run the products through torch.compile where the backend allows it (`compiled.py`; the
            reason when it does not, or when compiling fails, is `info()["compile"]`); a string names
            torch.compile's backend (True: "inductor").
    """

    _backends: dict[str, type] = {}

    def __init__(self, model: nn.Module | Objective, loss_fn: Any = None, data: Any = None,
                 params: Iterable[str | Tensor] | None = None, *, backend: str = "auto",
                 dtype: torch.dtype | None = None, max_memory: int | None = None, cache: bool | None = None,
                 merge_batches: bool | None = None, check_deterministic: bool = True,
                 check_symmetric: bool = True, seed: int = 0, distributed: bool | None = None,
                 autocast: torch.dtype | None = None, compile: bool | str = False):
        if distributed and not _dist.active():
            raise LandscapeError("distributed=True but torch.distributed is not initialized")
        if backend != "auto" and backend not in self._backends:
            raise LandscapeError(f"backend must be one of auto, {', '.join(self._backends)}, got {backend!r}")
        self.objective = Objective.of(model, loss_fn, data, params)
        self.model = self.objective.model
        check_fixed(self.model)
        self.distributed: bool = _dist.world_size() > 1 if distributed is None else bool(distributed)
        self._modes = [(m, m.training) for m in self.model.modules()]
        self.snapshot = Snapshot(self.objective, dtype)
        self.layout = self.snapshot.layout
        self.dtype: torch.dtype = self.snapshot.dtype
        self.device: torch.device = self.snapshot.device
        self.n_products = 0
        self._weight: int | None = None
        local = sum(b.size for b in self.objective.data) if self.objective.data.materialized else None
        self._cache_wanted = cache
        self._cache: list[tuple[Any, int]] | None = None
        self._cache_off = cache is False
        self._cache_note = "off (cache=False)" if cache is False else "not decided yet (at the first pass)"
        with self._modes_as_built():
            self.plan, self._impl, warm = make_plan(self.snapshot, Request(
                self._backends, backend, memory.budget(self.device, memory.OPERATOR_SHARE, max_memory),
                check_deterministic, check_symmetric, merge_batches, cache, seed, self.distributed, local, autocast))
        self._warm = warm if self.objective.data.materialized else None
        self._first_pass = FirstPassChecks(self.model, self.plan.autocast or self.dtype,
                                           "symmetric" in self.plan.first_pass) if self.plan.first_pass else None
        self._compile = (compile_backend(self._impl, compile if isinstance(compile, str) else "inductor")
                         if compile else (self._impl, None))
        self._impl = self._compile[0]

    # ---- public interface -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of differentiated parameters (the matrix is dim × dim)."""
        return self.layout.dim

    @property
    def param_names(self) -> list[str]:
        """The differentiated parameters, in flat-vector order."""
        return list(self.layout.names)

    @property
    def backend(self) -> str:
        """The backend in use ("func", "double_backward" or "finite_difference")."""
        return self.plan.backend

    @property
    def n_samples(self) -> int:
        """Σ_b w_b, the samples (or tokens) the average runs over, all ranks together (known after the first
        pass; under torch.distributed every rank must ask at the same point: the first pass is collective)."""
        if self._weight is None:
            self.matvec(torch.zeros(self.dim, dtype=self.dtype, device=self.device))
        return int(self._weight)

    def info(self) -> dict:
        """How the operator runs: backend, merged batch size, whether states are cached (and why: "cache"), the
        budget;
        attention_kernel "math" when fused attention (no double backward) is replaced by the math SDPA
        kernel; asymmetry, the measured |uᵀHv − vᵀHu| relative to its scale (see `checks`); rejected,
        {backend: why} for an "auto" candidate whose products failed the symmetry check; finite_difference (that
        backend only): its calibrated step δ and Richardson error estimate; backend_choice, what decided
        the backend (`Plan.choice`)."""
        plan = self.plan
        return {
            "backend": plan.backend,
            "backend_choice": plan.choice,
            "merge_samples": plan.merge_samples,
            "cached": self._cache is not None,
            "cache": self._cache_note,
            "budget_bytes": plan.sizing.budget,
            "state_bytes_per_sample": plan.sizing.state_bytes_per_sample,
            "dim": self.dim,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "attention_kernel": "math" if plan.math_attention else None,
            "asymmetry": plan.asymmetry if self._first_pass is None else self._first_pass.asymmetry,
            "rejected": dict(plan.rejected),
            "checks": list(plan.checks),
            "weights": "tokens" if self.objective.task or self.objective.weighting == "tokens" else "samples",
            "autocast": None if plan.autocast is None else str(plan.autocast).replace("torch.", ""),
            "compile": compile_info(self._impl, self._compile[1]),
            **({"finite_difference": self._impl.describe()} if hasattr(self._impl, "describe") else {}),
        }

    def matvec(self, v: Tensor) -> Tensor:
        """H v for one flat vector v [dim].

        Args:
            v: the vector.

        Returns:
            H v [dim].
        """
        return self.matmat(torch.as_tensor(v).reshape(-1, 1))[:, 0]

    def matmat(self, V: Tensor) -> Tensor:
        """H V for V [dim, k]: all k columns in one pass over the data. Returns [dim, k] on `device`, in the
        compute dtype (float32 for a half-precision model: batch products are summed in float32).

        Args:
            V: [dim, k] vectors.

        Returns:
            H V = Σ_b w_b H_b V / Σ_b w_b.
        """
        V = torch.as_tensor(V)
        if V.dim() != 2 or V.shape[0] != self.dim:
            raise LandscapeError(f"matmat: expected a [{self.dim}, k] matrix, got shape {tuple(V.shape)}")
        rows = V.to(device=self.device, dtype=self.dtype).T.contiguous()
        total = torch.zeros_like(rows, dtype=_accumulator(self.dtype))
        weight = 0
        tangents = self.layout.split(rows)
        with torch.enable_grad(), self._modes_as_built(), self.plan.kernel(self.device):
            for state, w in self._states():
                for into, part in zip(self.layout.split(total), self._impl.apply(state, tangents)):
                    into.add_(part, alpha=w)  # per parameter: no [k, dim] copy of the batch's products
                weight += w
        if self.distributed:
            total, weight = _dist.all_reduce_with_count(total, weight)
        if weight == 0:
            raise LandscapeError("data: no samples")
        self._weight = weight
        self.n_products += rows.shape[0]
        result = total.div_(weight)
        if self._first_pass is not None and not self._first_pass.done:
            self._first_pass.observe(rows, result)
        return result.T

    def gradient(self) -> Tensor:
        """∇L [dim], the data-set mean gradient at the snapshot: read from the kept gradient graphs of the
        Hessian's double-backward backend (free once cached), else one extra pass over the data."""
        total = torch.zeros(self.dim, dtype=_accumulator(self.dtype), device=self.device)
        weight = 0
        kept = isinstance(self._impl, DoubleBackwardHessian)
        with torch.enable_grad(), self._modes_as_built(), self.plan.kernel(self.device):
            for item, w in self._states() if kept else ((b, self.objective.weight(b)) for b in self._batches()):
                total += w * (item.gradient if kept else self._batch_gradient(item))
                weight += w
        if self.distributed:
            total, weight = _dist.all_reduce_with_count(total, weight)
        return total / weight

    def _batch_gradient(self, batch: Batch) -> Tensor:
        """∇ℓ_b [dim] at the snapshot (one first-order backward pass)."""
        return self.layout.join([g.unsqueeze(0) for g in self.snapshot.gradient(self.snapshot.params, batch)])[0]

    def batch_quadratic_forms(self, V: Tensor, pieces: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(w_b [B], v_iᵀ H_b v_i [B, k]) per data batch as given (never merged; each cut into `pieces` along
        the samples), for data-noise error bars (`landscape.hessian.solvers.errorbars`). One extra data pass.
        Under torch.distributed the batches of every rank, in rank order (the same on every rank).

        Args:
            V: [dim, k] vectors.
            pieces: cut each batch into this many parts along the samples.

        Returns:
            (weights, forms).
        """
        rows = torch.as_tensor(V).to(device=self.device, dtype=self.dtype).reshape(self.dim, -1).T.contiguous()
        tangents, weights, forms = self.layout.split(rows), [], []
        with torch.enable_grad(), self._modes_as_built(), self.plan.kernel(self.device):
            for batch in self.snapshot.batches():
                for b in batch.split(pieces=pieces) if pieces > 1 else [batch]:
                    w = self.objective.weight(b)
                    if w:
                        hv = self.layout.join(self._impl.apply(self._impl.prepare(b), tangents))
                        weights.append(w)
                        forms.append(torch.sum(hv * rows, dim=1, dtype=torch.float64).cpu())
        table = torch.cat([torch.tensor(weights, dtype=torch.float64)[:, None],
                           torch.stack(forms) if forms else torch.zeros(0, rows.shape[0], dtype=torch.float64)], 1)
        if self.distributed:
            table = _dist.all_gather_rows(table)
        return table[:, 0].long().numpy(), table[:, 1:].numpy()

    def __matmul__(self, V: Tensor) -> Tensor:
        V = torch.as_tensor(V)
        return self.matvec(V) if V.dim() == 1 else self.matmat(V)

    def to_scipy(self):
        """A scipy.sparse.linalg.LinearOperator (numpy in and out, in the operator's precision)."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            out = self.matmat(torch.from_numpy(np.ascontiguousarray(X.reshape(self.dim, -1)))).detach().cpu().numpy()
            return out.reshape(X.shape)

        return LinearOperator((self.dim, self.dim), matvec=mm, rmatvec=mm, matmat=mm, dtype=np_dtype)

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """A flat vector [dim] as {parameter name: tensor of its shape}.

        Args:
            v: a flat [dim] vector.

        Returns:
            The per-parameter tensors.
        """
        return self.layout.unflatten(torch.as_tensor(v))

    @contextmanager
    def _modes_as_built(self) -> Iterator[None]:
        """Run with every module's train/eval flag as it was at construction; restore the caller's after."""
        with preserved_modes(self.model):
            for m, flag in self._modes:
                m.training = flag
            yield

    # ---- the data pass -----------------------------------------------------------------------------

    def _batches(self) -> Iterator[Batch]:
        """Prepared batches, merged up to the plan's `merge_samples` when merging is on."""
        target = self.plan.merge_samples
        pending: list[Batch] = []
        size = 0
        for b in self.snapshot.batches():
            if target is None:
                yield b
                continue
            if pending and size + b.size > target:
                yield concat(pending)
                pending, size = [], 0
            pending.append(b)
            size += b.size
        if pending:
            yield concat(pending)

    def _states(self) -> Iterator[tuple[Any, int]]:
        """(prepared state, weight) per batch; states are cached all-or-nothing within half the budget."""
        if self._cache is not None:
            yield from self._cache
            return
        caching = not self._cache_off
        kept: list[tuple[Any, int]] = []
        used = 0
        for i, batch in enumerate(self._batches()):
            w = self.objective.weight(batch)
            state = self._warm if i == 0 and self._warm is not None else self._impl.prepare(batch)
            self._warm = None
            if caching:
                used += self._impl.state_bytes(state, batch.size)
                caching = used <= self.plan.sizing.budget // 2 or self._cache_wanted is True
                if caching:
                    kept.append((state, w))
                else:
                    kept = []
            yield state, w
        gib, half = used / 2**30, self.plan.sizing.budget / 2**31
        if caching:
            self._cache = kept
            self._cache_note = f"kept: {len(kept)} batch state(s), {gib:.3g} GiB (half the budget: {half:.3g} GiB)"
        elif not self._cache_off:
            self._cache_off = True
            self._cache_note = f"skipped: the states exceed half the budget ({half:.3g} GiB): re-prepared every pass"


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype batch products are summed in: float32 for half precision (a bf16 sum of many batches loses
    digits a float32 one keeps), else the compute dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class HessianOperator(CurvatureOperator):
    """H = Σ_b w_b ∇²ℓ_b / Σ_b w_b over the data, as a dim×dim symmetric matrix of flat vectors.

    Same arguments as `CurvatureOperator`. Always checked at construction (LandscapeError otherwise): finite
    products, and symmetric ones (uᵀHv = vᵀHu for three random vectors to 10·√eps; a wrong double backward
    such as weight_norm's fails it). Fused attention without a double backward runs through the math SDPA
    kernel (`info()["attention_kernel"]`); backend="finite_difference" keeps it fused (two gradients per vector,
    the step calibrated and the error estimated at construction: `info()["finite_difference"]`).

        op = HessianOperator(model, F.cross_entropy, (X, y))
        op = HessianOperator(gpt2, None, [{"input_ids": ids, "attention_mask": mask}])   # the model's own loss
    """

    _backends = {"func": FuncHessian, "double_backward": DoubleBackwardHessian,
                 "finite_difference": FiniteDifferenceHessian}
