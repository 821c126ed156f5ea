"""The public curvature-operator API: a data-set curvature matrix applied to k vectors per data pass.

    H = (1/N) Σ_b n_b ∇²_θ L_b(θ),   L_b = loss_fn(model(X_b), y_b)  (a batch mean),  N = Σ_b n_b

over the chosen parameters θ (flattened in `named_parameters()` order). `matmat(V)` applies H to the
k columns of V in one pass over the data: per batch one primal pass (forward and backward) is shared
by all k vectors, then each vector costs a tangent pass (about two gradients of arithmetic).

This module holds the operator's interface and its data pass; the rest lives beside it:
- `_backends.py` (Hessian) and `ggn.py` (GGN): the per-batch product machineries, "func" (torch.func
  forward-over-reverse, vmapped over the k vectors) and "double_backward" (autograd's gradient graph,
  kept between calls when it fits in memory, so Lanczos pays the primal pass once per batch).
- `_plan.py`: which backend runs ("auto" times both on the first batch), the construction-time checks
  and batch merging. `_checks.py`: the checks themselves (fixed, deterministic, finite, symmetric
  uᵀHv = vᵀHu, math attention kernel for fused SDPA). `_data.py`, `_flat.py`, `_memory.py`: plumbing.

Under torch.distributed (`distributed=None`: whenever a process group of several ranks is active) each
rank passes its own shard of the samples as `data`: a product sums n_b·H_b V over the rank's batches,
then one all_reduce per data pass adds the [k, dim] sums of all ranks together with the sample counts,
and divides by the global N. Planning decisions are agreed across ranks and a failure on one rank is
raised on all, so every rank applies the same matrix and runs the same (seeded) iterations.

The model is never written to: parameters and buffers are snapshotted (in `dtype`), no `.grad` is
set, and each product runs with the train/eval flags the model had at construction, restoring the
caller's flags afterwards. A model in train mode with BatchNorm or dropout is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape import distributed as _dist
from landscape import memory as _memory
from landscape.errors import LandscapeError
from landscape.hessian.operators import checks as _checks
from landscape.hessian.operators import data as _data
from landscape.hessian.operators import plan as _plan
from landscape.hessian.operators.backends import DoubleBackwardHessian, FuncHessian
from landscape.hessian.operators.checks import check_fixed
from landscape.hessian.operators.flat import FlatLayout, select_params, snapshot
from landscape.modes import preserved_modes

__all__ = ["BACKENDS", "CurvatureOperator", "HessianOperator", "check_fixed"]

BACKENDS = ("auto", "func", "double_backward")


class CurvatureOperator:
    """A symmetric dim×dim curvature matrix averaged over `data`; subclasses define the per-batch product.

    Subclasses set `_backends = {"func": cls, "double_backward": cls}`; a backend has
    `prepare(batch) -> state` (work shared by all vectors) and
    `apply(state, tangents) -> list of [k, *shape]` (the batch-mean product, per parameter).
    """

    _backends: dict[str, type] = {}

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        data: Any,
        params: Iterable[str | Tensor] | None = None,
        *,
        backend: str = "auto",
        dtype: torch.dtype | None = None,
        max_memory: int | None = None,
        cache: bool | None = None,
        merge_batches: bool | None = None,
        check_deterministic: bool = True,
        seed: int = 0,
        distributed: bool | None = None,
    ):
        if distributed and not _dist.active():
            raise LandscapeError("distributed=True but torch.distributed is not initialized")
        self.distributed: bool = _dist.world_size() > 1 if distributed is None else bool(distributed)
        if backend not in BACKENDS:
            raise LandscapeError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        check_fixed(model)
        self.model, self.loss_fn = model, loss_fn
        self._modes = [(m, m.training) for m in model.modules()]
        names = select_params(model, params)
        all_params, buffers = snapshot(model, dtype)
        first = all_params[names[0]]
        self.dtype: torch.dtype = first.dtype
        self.device: torch.device = first.device
        if not self.dtype.is_floating_point:
            raise LandscapeError(f"parameters must be floating point, got {self.dtype}")
        self.params = {n: all_params[n] for n in names}
        self.constants = {**{n: p for n, p in all_params.items() if n not in self.params}, **buffers}
        self.layout = FlatLayout(names, [p.shape for p in self.params.values()])
        self.data = _data.DataSource(data)
        self.n_products = 0
        self._budget = _memory.budget(self.device, _memory.OPERATOR_SHARE, max_memory)
        self._cache_wanted = cache
        self._merge_wanted = merge_batches
        self._backend_name = backend
        self._cache: list[tuple[Any, int]] | None = None
        self._cache_off = cache is False
        self._n_samples: int | None = None
        self._n_local: int | None = None
        if self.data.materialized:
            self._n_local = sum(_data.batch_size(b[0]) for b in self.data)
            self._n_samples = None if self.distributed else self._n_local
        self._state_bytes_per_sample: int | None = None
        self._merge_samples: int | None = None
        self._math_attention = False
        self._asymmetry: float | None = None
        self._rejected: dict[str, str] = {}
        _plan.plan(self, check_deterministic, seed)

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
        """The backend in use ("func" or "double_backward")."""
        return self._backend_name

    @property
    def n_samples(self) -> int:
        """N, the number of samples the average runs over, all ranks together (known after the first pass;
        under torch.distributed every rank must ask at the same point: the first pass is collective)."""
        if self._n_samples is None:
            self.matvec(torch.zeros(self.dim, dtype=self.dtype, device=self.device))
        return int(self._n_samples)

    def info(self) -> dict:
        """How the operator runs: backend, merged batch size, whether graphs are cached, the budget;
        attention_kernel "math" when fused attention (no double backward) is replaced by the math SDPA
        kernel; asymmetry, the measured |uᵀHv − vᵀHu| relative to its scale (see `_checks`); rejected,
        {backend: why} for an "auto" candidate whose products failed the symmetry check."""
        return {
            "backend": self.backend,
            "merge_samples": self._merge_samples,
            "cached": self._cache is not None,
            "budget_bytes": self._budget,
            "state_bytes_per_sample": self._state_bytes_per_sample,
            "dim": self.dim,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "attention_kernel": "math" if self._math_attention else None,
            "asymmetry": self._asymmetry,
            "rejected": dict(self._rejected),
        }

    def matvec(self, v: Tensor) -> Tensor:
        """H v for one flat vector v [dim]."""
        return self.matmat(torch.as_tensor(v).reshape(-1, 1))[:, 0]

    def matmat(self, V: Tensor) -> Tensor:
        """H V for V [dim, k]: all k columns in one pass over the data. Returns [dim, k] on `device`."""
        V = torch.as_tensor(V)
        if V.dim() != 2 or V.shape[0] != self.dim:
            raise LandscapeError(f"matmat: expected a [{self.dim}, k] matrix, got shape {tuple(V.shape)}")
        rows = V.to(device=self.device, dtype=self.dtype).T.contiguous()
        total = torch.zeros_like(rows)
        count = 0
        tangents = self.layout.split(rows)
        with torch.enable_grad(), self._modes_as_built(), self.kernel():
            for state, n in self._states():
                total += self.layout.join(self._impl.apply(state, tangents)).mul_(n)
                count += n
        if self.distributed:
            total, count = _data.reduce_samples(total, count)
        self._n_samples = count
        self.n_products += rows.shape[0]
        return _data.sample_average(total, count).T

    def batch_quadratic_forms(self, V: Tensor, pieces: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(n_b [B], v_iᵀ H_b v_i [B, k]) per data batch as given (never merged; each cut into `pieces` along
        the samples), for data-noise error bars (landscape.hessian.solvers.errorbars). One extra data pass."""
        rows = torch.as_tensor(V).to(device=self.device, dtype=self.dtype).reshape(self.dim, -1).T.contiguous()
        tangents, sizes, forms = self.layout.split(rows), [], []
        with torch.enable_grad(), self._modes_as_built(), self.kernel():
            for batch in self.data:
                batch = _data.to_device(batch, self.device, self.dtype)
                split = pieces > 1 and all(isinstance(t, Tensor) for t in batch)
                for b in zip(*(t.tensor_split(pieces) for t in batch)) if split else [batch]:
                    if _data.batch_size(b[0]):
                        hv = self.layout.join(self._impl.apply(self._impl.prepare(b), tangents))
                        sizes.append(_data.batch_size(b[0]))
                        forms.append(torch.sum(hv * rows, dim=1, dtype=torch.float64).cpu())
        return np.asarray(sizes), torch.stack(forms).numpy()

    def __matmul__(self, V: Tensor) -> Tensor:
        V = torch.as_tensor(V)
        return self.matvec(V) if V.dim() == 1 else self.matmat(V)

    def to_scipy(self):
        """A scipy.sparse.linalg.LinearOperator (numpy in and out, in the operator's precision)."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            cols = X.reshape(self.dim, -1)
            out = self.matmat(torch.from_numpy(np.ascontiguousarray(cols))).detach().cpu().numpy()
            return out.reshape(X.shape)

        return LinearOperator((self.dim, self.dim), matvec=mm, rmatvec=mm, matmat=mm, dtype=np_dtype)

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """A flat vector [dim] as {parameter name: tensor of its shape}."""
        return self.layout.unflatten(torch.as_tensor(v))

    @contextmanager
    def _modes_as_built(self) -> Iterator[None]:
        """Run with every module's train/eval flag as it was at construction; restore the caller's after."""
        with preserved_modes(self.model):
            for m, flag in self._modes:
                m.training = flag
            yield

    def kernel(self) -> AbstractContextManager:
        """The attention-kernel context every product runs in (math SDPA when fused attention failed)."""
        return _checks.math_attention(self._math_attention)

    # ---- functional model -------------------------------------------------------------------------

    def forward(self, params: dict[str, Tensor], inputs: Any) -> Tensor:
        """The model's output with `params` (the differentiated ones) and the snapshotted rest."""
        return functional_call(self.model, {**self.constants, **params}, _data.as_args(inputs))

    def loss(self, params: dict[str, Tensor], batch: _data.Batch) -> Tensor:
        """The batch-mean loss at `params`."""
        return self.loss_fn(self.forward(params, batch[0]), batch[1])

    # ---- the data pass -----------------------------------------------------------------------------

    def lane_chunk(self, n: int) -> int | None:
        """Vectors to vmap at once for a batch of n samples: the kept state plus about two states of
        tangents per vector must fit in half the budget (None: all at once)."""
        if self._state_bytes_per_sample is None:
            return None
        state = self._state_bytes_per_sample * n
        return max(1, int((self._budget // 2 - state) // (2 * state)))

    def _batches(self) -> Iterator[_data.Batch]:
        """Device batches, merged up to `_merge_samples` when merging is on."""
        pending: list[_data.Batch] = []
        size = 0
        for b in self.data:
            b = _data.to_device(b, self.device, self.dtype)
            if self._merge_samples is None:
                yield b
                continue
            n = _data.batch_size(b[0])
            if pending and size + n > self._merge_samples:
                yield _data.concat(pending)
                pending, size = [], 0
            pending.append(b)
            size += n
        if pending:
            yield _data.concat(pending)

    def _states(self) -> Iterator[tuple[Any, int]]:
        """(prepared state, samples) per batch; states are cached all-or-nothing within budget."""
        if self._cache is not None:
            yield from self._cache
            return
        caching = not self._cache_off
        kept: list[tuple[Any, int]] = []
        used = 0
        for batch in self._batches():
            n = _data.batch_size(batch[0])
            state = self._impl.prepare(batch)
            if caching:
                used += self._impl.state_bytes(state, n)
                caching = used <= self._budget // 2 or self._cache_wanted is True
                if caching:
                    kept.append((state, n))
                else:
                    kept = []
            yield state, n
        if caching:
            self._cache = kept
        else:
            self._cache_off = True


class HessianOperator(CurvatureOperator):
    """H = (1/N) Σ_b n_b ∇²L_b over `data`, as a dim×dim symmetric matrix of flat vectors.

    `HessianOperator(model, loss_fn, data, params=None, *, backend="auto", dtype=None,
    max_memory=None, cache=None, merge_batches=None, check_deterministic=True, seed=0)`

    - data: an (X, y) pair, a list of (X, y) batches, or any iterable of them (DataLoader).
    - params: names or parameter tensors to differentiate (default: all with requires_grad).
    - dtype: compute in this precision (e.g. torch.float64) without touching the model.
    - max_memory: bytes the operator may use (default: a share of the free memory, see _memory).
    - cache: keep per-batch gradient graphs between calls (None: when they fit in half the budget).
    - merge_batches: concatenate batches (None: when samples are independent and memory allows).
    - check_deterministic: compute two products of one vector on the first batch and require equality.

    Always checked at construction (LandscapeError otherwise): finite products, and symmetric ones
    (uᵀHv = vᵀHu for three random vectors to 10·√eps; a wrong double backward such as weight_norm's
    fails it). Fused attention without a double backward runs through the math SDPA kernel (`info()`).
    """

    _backends = {"func": FuncHessian, "double_backward": DoubleBackwardHessian}
