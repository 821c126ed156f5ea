"""The Hessian of a data-set loss as a matrix applied to k vectors per data pass.

    H = (1/N) Σ_b n_b ∇²_θ L_b(θ),   L_b = loss_fn(model(X_b), y_b)  (a batch mean),  N = Σ_b n_b

over the chosen parameters θ (flattened in `named_parameters()` order). `matmat(V)` applies H to the
k columns of V in one pass over the data: per batch one primal pass (forward and backward) is shared
by all k vectors, then each vector costs a tangent pass (about two gradients of arithmetic).

Backends (the same matrix, different machinery):
- "func": torch.func `jvp` of `grad` (forward-over-reverse), vmapped over the k tangents.
- "double_backward": autograd `grad(create_graph=True)`, then one backward of the gradient graph per
  vector. The gradient graph of a batch is kept between calls when it fits in memory, so repeated
  products (Lanczos) pay the primal pass once per batch, not once per call.
- "auto": both are timed on the first batch and the faster one is kept (the kept-graph saving counted).
  Measured on a 2-core CPU (per-vector cost in gradients, k = 4): MLPs and conv nets favour
  double_backward (conv 1.5 vs 4.3: vmapped conv weights fall to slow batched kernels), attention
  favours func (tiny ViT 1.6 vs 2.8). A backend that fails (e.g. an op without forward-mode AD, or
  F.mse_loss whose forward-over-reverse fails in torch 2.13) is skipped; so is timing func on problems
  where a whole pass costs under ~30 ms, which cannot repay forward-mode AD's one-time setup. Pass
  `backend=` to pin one (the two agree to rounding, not bit for bit).

Batches may be merged into larger ones (up to the memory budget) when the model treats samples
independently and the loss is a batch mean: checked once on the first two batches (outputs and losses
of the concatenation against the separate batches). The merged operator is the same matrix.

Under torch.distributed (`distributed=None`: whenever a process group of several ranks is active) each
rank passes its own shard of the samples as `data`: a product sums n_b·H_b V over the rank's batches,
then one all_reduce per data pass adds the [k, dim] sums of all ranks together with the sample counts,
and divides by the global N. Planning decisions (backend, merging) are agreed across ranks and a
failure on one rank is raised on all, so every rank applies the same matrix and runs the same
(seeded) iterations on identical products.

The model is never written to: parameters and buffers are snapshotted (in `dtype`), no `.grad` is
set, and each product runs with the train/eval flags the model had at construction, restoring the
caller's flags afterwards. A model in train mode with BatchNorm or dropout is refused.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from landscape import distributed as _dist
from landscape.errors import LandscapeError
from landscape.hessian import _data, _memory
from landscape.hessian._flat import FlatLayout, select_params, snapshot

BACKENDS = ("auto", "func", "double_backward")


def check_fixed(model: nn.Module) -> None:
    """Refuse modules whose train-mode output depends on the batch or on randomness."""
    for name, m in model.named_modules():
        if not m.training:
            continue
        random = isinstance(m, _DropoutNd) and m.p > 0
        random |= isinstance(m, nn.MultiheadAttention) and m.dropout > 0
        if isinstance(m, _BatchNorm) or random:
            raise LandscapeError(
                f"{name or 'model'} ({type(m).__name__}) is in train mode: the operator would not be a "
                "fixed matrix: call model.eval()"
            )


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
        self._budget = _memory.budget(self.device, max_memory)
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
        self._plan(check_deterministic, seed)

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
        """How the operator runs: backend, merged batch size, whether graphs are cached, the budget."""
        return {
            "backend": self.backend,
            "merge_samples": self._merge_samples,
            "cached": self._cache is not None,
            "budget_bytes": self._budget,
            "state_bytes_per_sample": self._state_bytes_per_sample,
            "dim": self.dim,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
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
        with torch.enable_grad(), self._modes_as_built():
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
        the samples), for data-noise error bars (landscape.hessian.errorbars). One extra data pass."""
        rows = torch.as_tensor(V).to(device=self.device, dtype=self.dtype).reshape(self.dim, -1).T.contiguous()
        tangents, sizes, forms = self.layout.split(rows), [], []
        with torch.enable_grad(), self._modes_as_built():
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
        saved = [(m, m.training) for m, _ in self._modes]
        for m, flag in self._modes:
            m.training = flag
        try:
            yield
        finally:
            for m, flag in saved:
                m.training = flag

    # ---- functional model -------------------------------------------------------------------------

    def forward(self, params: dict[str, Tensor], inputs: Any) -> Tensor:
        """The model's output with `params` (the differentiated ones) and the snapshotted rest."""
        return functional_call(self.model, {**self.constants, **params}, _data.as_args(inputs))

    def loss(self, params: dict[str, Tensor], batch: _data.Batch) -> Tensor:
        """The batch-mean loss at `params`."""
        return self.loss_fn(self.forward(params, batch[0]), batch[1])

    # ---- planning: backend, determinism, merging, caching -------------------------------------------

    def _plan(self, check_deterministic: bool, seed: int) -> None:
        """Pick the backend, check determinism and choose the merged batch size; under torch.distributed
        the ranks agree on each choice and any rank's failure is raised on every rank."""
        trials, v, first = self._collective(lambda: self._try_backends(seed))
        self._backend_name = self._agree_backend(trials)

        def check() -> int | None:
            if self._backend_name not in trials:  # another rank's timing chose a backend skipped here
                impl = self._backends[self._backend_name](self)
                try:
                    trials[self._backend_name] = (impl, *self._trial(impl, first[0], v, timed=False))
                except (RuntimeError, NotImplementedError) as e:
                    raise LandscapeError(f"backend {self._backend_name!r} cannot differentiate this model: "
                                         f"{_line(e)}") from e
            self._impl, p1, _ = trials[self._backend_name]
            if check_deterministic:
                self._check_deterministic(first[0], v, p1)
            return self._merge_target(first)

        merge = self._collective(check)
        if self.distributed:
            flags = torch.tensor([merge is None, -(merge or 0)], dtype=torch.float64, device=_dist.comm_device())
            _dist.all_reduce_max(flags)
            merge = None if flags[0] else int(-flags[1])
        self._merge_samples = merge

    def _collective(self, fn):
        """fn(); under torch.distributed a failure on any rank is raised on every rank."""
        if not self.distributed:
            return fn()
        result, error = None, None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - handed to `agree`, which re-raises it on every rank
            error = e
        _dist.agree(error)
        return result

    def _try_backends(self, seed: int) -> tuple[dict, list[Tensor], list[_data.Batch]]:
        """Trial products of the candidate backends on the first batch: ({name: (impl, product, times)},
        the two trial vectors, the first two device batches)."""
        first = [_data.to_device(b, self.device, self.dtype) for b in self.data.first(2)]
        leaves = {n: p.detach().requires_grad_() for n, p in self.params.items()}
        with torch.enable_grad():
            value, nbytes = _memory.measure(lambda: self.loss(leaves, first[0]), self.device)
        if not isinstance(value, Tensor) or value.dim() != 0:
            raise LandscapeError("loss_fn must return a scalar (the batch-mean loss)")
        del value
        # a kept gradient graph (create_graph=True) holds about twice the forward pass's saved tensors
        self._state_bytes_per_sample = max(1, 2 * nbytes // max(1, _data.batch_size(first[0][0])))
        gen = torch.Generator().manual_seed(seed)
        v = self.layout.split(torch.randn(2, self.dim, generator=gen, dtype=torch.float64).to(self.device, self.dtype))
        names = ["double_backward", "func"] if self._backend_name == "auto" else [self._backend_name]
        trials, errors = {}, []
        for name in names:
            if name == "func" and self._func_trial_pointless(trials, first[0]):
                continue
            impl = self._backends[name](self)
            try:
                trials[name] = (impl, *self._trial(impl, first[0], v, timed=len(names) > 1))
            except (RuntimeError, NotImplementedError) as e:
                if self._backend_name != "auto":
                    raise LandscapeError(f"backend {name!r} cannot differentiate this model: {_line(e)}") from e
                errors.append(f"{name}: {_line(e)}")
        if not trials:
            raise LandscapeError("no backend can differentiate this model (" + "; ".join(errors) + ")")
        return trials, v, first

    def _agree_backend(self, trials: dict) -> str:
        """The locally faster backend; under torch.distributed, func only when most ranks' timings chose it
        (one vote each), so every rank runs the same backend."""
        local = self._pick(trials)
        if not self.distributed:
            return local
        votes = torch.tensor([float(local == "func"), 1.0], dtype=torch.float64, device=_dist.comm_device())
        _dist.all_reduce_sum(votes)
        return "func" if 2 * votes[0] > votes[1] else "double_backward"

    def _check_deterministic(self, batch: _data.Batch, v: list[Tensor], p1: Tensor) -> None:
        """Require a second product with the same vectors on the first batch to reproduce `p1`."""
        with torch.enable_grad():
            p2 = self.layout.join(self._impl.apply(self._impl.prepare(batch), v))
        scale = float(p1.norm())
        diff = float((p1 - p2).norm())
        if not math.isfinite(diff) or diff > 1e3 * torch.finfo(self.dtype).eps * max(scale, 1e-30):
            raise LandscapeError(
                f"two products with the same vector differ (relative {diff / max(scale, 1e-30):.1e}): "
                "the model or loss is random (dropout? stochastic depth?) and the operator would not "
                "be a fixed matrix"
            )

    def _trial(self, impl: Any, batch: _data.Batch, v: list[Tensor], timed: bool) -> tuple[Tensor, dict]:
        """Products of the first batch with two vectors; with `timed`, the seconds of `prepare` and of the
        best of two `apply` calls."""

        def clock() -> float:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return time.perf_counter()

        with torch.enable_grad():
            t0 = clock()
            state = impl.prepare(batch)
            t1 = clock()
            out = self.layout.join(impl.apply(state, v))
            t2 = clock()
            times = {"prepare": t1 - t0, "apply": t2 - t1}
            if timed:
                impl.apply(state, v)
                times["apply"] = min(times["apply"], clock() - t2)
        return out, times

    def _func_trial_pointless(self, trials: dict, batch: _data.Batch) -> bool:
        """Skip timing func when double_backward already makes a full 2-vector pass cheaper than ~30 ms
        and forward-mode AD is not loaded yet: its one-time setup (torch scripts its jvp decompositions,
        0.4-2 s) could not pay for itself over a few hundred passes."""
        if "double_backward" not in trials or "torch._decomp.decompositions_for_jvp" in sys.modules:
            return False
        if not self._n_local:
            return False
        times = trials["double_backward"][2]
        per_pass = times["apply"] + (0 if self._cache_expected() else times["prepare"])
        return per_pass * self._n_local / _data.batch_size(batch[0]) < 0.03

    def _cache_expected(self) -> bool:
        """Will the per-batch states of a pass over this rank's samples fit in the cache's half of the budget?"""
        n = self._n_local or 0
        return not self._cache_off and 0 < n * (self._state_bytes_per_sample or 0) <= self._budget // 2

    def _pick(self, trials: dict) -> str:
        """The faster backend on the first batch (double_backward's primal counted only when its graphs
        will not be kept); func needs to win by 20% to displace double_backward on a CPU, and vice versa
        on a GPU, so near-ties do not flip between runs."""
        if len(trials) == 1:
            return next(iter(trials))
        db = trials["double_backward"][2]
        cost_db = db["apply"] + (0 if self._cache_expected() else db["prepare"])
        cost_func = trials["func"][2]["prepare"] + trials["func"][2]["apply"]
        if self.device.type == "cpu":
            return "func" if cost_func * 1.2 < cost_db else "double_backward"
        return "double_backward" if cost_db * 1.2 < cost_func else "func"

    def lane_chunk(self, n: int) -> int | None:
        """Vectors to vmap at once for a batch of n samples: the kept state plus about two states of
        tangents per vector must fit in half the budget (None: all at once)."""
        if self._state_bytes_per_sample is None:
            return None
        state = self._state_bytes_per_sample * n
        return max(1, int((self._budget // 2 - state) // (2 * state)))

    def _merge_target(self, first: list[_data.Batch]) -> int | None:
        """Samples per merged batch, or None to keep the batches as given."""
        if self._merge_wanted is False or len(first) < 2 or not _data.concatenable(first):
            return None
        # one batch's products may use half the budget: the kept state plus about one state of tangents
        # per vector processed at a time (sequential vectors: 1; vmapped: assume 4)
        per_sample = self._state_bytes_per_sample * (2 if self._backend_name == "double_backward" else 5)
        target = int(self._budget // 2 // per_sample)
        sizes = [_data.batch_size(b[0]) for b in first]
        if target < sum(sizes) or not self._independent(first):
            return None
        return target

    def _independent(self, first: list[_data.Batch]) -> bool:
        """Do the first two batches give the same outputs and mean loss when concatenated?"""
        tol = 10 * math.sqrt(torch.finfo(self.dtype).eps)
        with torch.no_grad():
            outs = [self.forward(self.params, b[0]) for b in first]
            joined = _data.concat(first)
            out = self.forward(self.params, joined[0])
            if not isinstance(out, Tensor) or out.shape[0] != sum(o.shape[0] for o in outs):
                return False
            sep = torch.cat(outs)
            if (out - sep).abs().max() > tol * max(float(sep.abs().max()), 1e-30):
                return False
            n = [_data.batch_size(b[0]) for b in first]
            mean = sum(ni * self.loss_fn(o, b[1]) for ni, o, b in zip(n, outs, first)) / sum(n)
            return bool(abs(self.loss_fn(out, joined[1]) - mean) <= tol * max(float(abs(mean)), 1e-30))

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


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ---- Hessian backends -------------------------------------------------------------------------------


class _FuncHessian:
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


class _DoubleBackwardHessian:
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
    """

    _backends = {"func": _FuncHessian, "double_backward": _DoubleBackwardHessian}
