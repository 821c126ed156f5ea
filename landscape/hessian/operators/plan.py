"""How an operator runs: backend choice, construction-time checks, batch merging (one job: planning).

At construction `plan(op)` makes every decision once, on the first batch(es):
1. Backend: trial products of two random vectors with each candidate ("double_backward", then "func");
   with backend="auto" the faster is kept. Costs per data pass: double_backward counts its primal
   (`prepare`) only when the kept graphs will not fit the cache (half the budget); func must win by 20%
   on a CPU to displace double_backward, and vice versa on a GPU, so near-ties do not flip between
   runs. Timing func is skipped when a whole pass costs under ~30 ms and forward-mode AD is not loaded
   yet (its one-time setup, 0.4–2 s, could not pay for itself). A backend that raises is skipped.
   When no backend can differentiate the model and a failure names a fused attention kernel, the trials
   are repeated under the math SDPA kernel (see `_checks`), which every later product then uses.
2. Checks (see `_checks`): finite products; with `check_deterministic`, a second product of the same
   vectors on the first batch reproduces the first to 1e3·eps; the products of three vectors are
   symmetric (uᵀHv = vᵀHu) to 10·√eps.
3. Merging: batches are concatenated up to `budget/2 / (per-sample state · lanes)` samples when the
   first two batches give the same outputs and mean loss concatenated as separately (samples are
   independent and the loss is a batch mean), so the merged operator is the same matrix.
Under torch.distributed the ranks agree on each decision (backend by majority vote of the timings,
merging by the smallest target) and a failure on one rank is raised on all.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from landscape import distributed as _dist
from landscape import memory as _memory
from landscape.errors import LandscapeError, first_line
from landscape.hessian.operators import checks as _checks
from landscape.hessian.operators import data as _data

if TYPE_CHECKING:
    from landscape.hessian.operators.operator import CurvatureOperator

_FAILURES = (RuntimeError, NotImplementedError)


def plan(op: CurvatureOperator, check_deterministic: bool, seed: int) -> None:
    """Pick the backend, run the checks and choose the merged batch size (sets op._impl, op._backend_name,
    op._merge_samples, op._math_attention, op._asymmetry, op._rejected)."""
    auto = op._backend_name == "auto"
    trials, v, first = collective(op, lambda: try_backends(op, seed))
    chosen = agree_backend(op, trials)
    v2 = [t[:2] for t in v]  # the two trial vectors, per parameter

    def validate(name: str) -> float:
        """Finite, deterministic and symmetric products of `name` (the first two model properties raise
        at once; an asymmetry raises for the caller to try the other backend)."""
        if name not in trials:  # skipped or chosen by another rank's timing
            impl = op._backends[name](op)
            try:
                trials[name] = (impl, *trial(op, impl, first[0], v2, timed=False))
            except _FAILURES as e:
                raise LandscapeError(f"backend {name!r} cannot differentiate this model: {first_line(e)}") from e
        impl, p1, _ = trials[name]
        _checks.check_finite(p1, "the curvature products")
        V, HV = op.layout.join(v2), p1
        if check_deterministic:
            with torch.enable_grad(), op.kernel():
                p2 = op.layout.join(impl.apply(impl.prepare(first[0]), v))
            _checks.check_same(p1, p2[:2], "products")
            V, HV = op.layout.join(v), p2
        return _checks.check_symmetric(V, HV, op.model, op.dtype)

    def check() -> tuple[str, int | None]:
        # with backend="auto", a backend whose products are not symmetric (a wrong rule in its autodiff
        # path, e.g. forward-over-reverse on HF BERT in torch 2.13) gives way to the other one
        candidates = [chosen, *([n for n in op._backends if n != chosen] if auto else [])]
        failures: list[LandscapeError] = []
        for name in candidates:
            try:
                op._asymmetry = validate(name)
            except LandscapeError as e:
                if "not symmetric" not in str(e) and not (failures and "cannot differentiate" in str(e)):
                    raise
                failures.append(e)
                op._rejected[name] = str(e)
                continue
            op._backend_name, op._impl = name, trials[name][0]
            return name, merge_target(op, first)
        raise failures[0]

    name, merge = collective(op, check)
    if op.distributed:
        flags = torch.tensor([merge is None, -(merge or 0), name == "func", -(name == "func")],
                             dtype=torch.float64, device=_dist.comm_device())
        _dist.all_reduce_max(flags)
        merge = None if flags[0] else int(-flags[1])
        if flags[2] != -flags[3]:
            raise LandscapeError("the ranks' symmetry checks kept different backends; pass backend=")
    op._merge_samples = merge


def collective(op: CurvatureOperator, fn: Callable[[], Any]) -> Any:
    """fn(); under torch.distributed a failure on any rank is raised on every rank."""
    if not op.distributed:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - handed to `agree`, which re-raises it on every rank
        error = e
    _dist.agree(error)
    return result


def try_backends(op: CurvatureOperator, seed: int) -> tuple[dict, list[Tensor], list[_data.Batch]]:
    """Trial products of the candidate backends on the first batch: ({name: (impl, product, times)},
    three random vectors (per parameter, [3, *shape]; the trials use the first two), the first two
    device batches). Retried under the math attention kernel when only fused attention stood in the way."""
    first = [_data.to_device(b, op.device, op.dtype) for b in op.data.first(2)]
    leaves = {n: p.detach().requires_grad_() for n, p in op.params.items()}
    with torch.enable_grad(), op.kernel():
        value, nbytes = _memory.measure(lambda: op.loss(leaves, first[0]), op.device)
    if not isinstance(value, Tensor) or value.dim() != 0:
        raise LandscapeError("loss_fn must return a scalar (the batch-mean loss)")
    del value
    # a kept gradient graph (create_graph=True) holds about twice the forward pass's saved tensors
    op._state_bytes_per_sample = max(1, 2 * nbytes // max(1, _data.batch_size(first[0][0])))
    gen = torch.Generator().manual_seed(seed)
    v = op.layout.split(torch.randn(3, op.dim, generator=gen, dtype=torch.float64).to(op.device, op.dtype))
    trials, errors = _run_trials(op, first[0], [t[:2] for t in v])
    if not trials and not op._math_attention and _checks.is_attention_error(errors):
        op._math_attention = True
        trials, errors = _run_trials(op, first[0], [t[:2] for t in v])
    if not trials:
        if op._backend_name != "auto":
            raise LandscapeError(f"backend {op._backend_name!r} cannot differentiate this model: {errors[0]}")
        raise LandscapeError("no backend can differentiate this model (" + "; ".join(errors) + ")")
    return trials, v, first


def _run_trials(op: CurvatureOperator, batch: _data.Batch, v: list[Tensor]) -> tuple[dict, list[str]]:
    names = ["double_backward", "func"] if op._backend_name == "auto" else [op._backend_name]
    trials, errors = {}, []
    for name in names:
        if name == "func" and func_trial_pointless(op, trials, batch):
            continue
        impl = op._backends[name](op)
        try:
            trials[name] = (impl, *trial(op, impl, batch, v, timed=len(names) > 1))
        except _FAILURES as e:
            errors.append(f"{name}: {first_line(e, limit=200)}" if len(names) > 1 else first_line(e, limit=200))
    return trials, errors


def agree_backend(op: CurvatureOperator, trials: dict) -> str:
    """The locally faster backend; under torch.distributed, func only when most ranks' timings chose it
    (one vote each), so every rank runs the same backend."""
    local = pick(op, trials)
    if not op.distributed:
        return local
    votes = torch.tensor([float(local == "func"), 1.0], dtype=torch.float64, device=_dist.comm_device())
    _dist.all_reduce_sum(votes)
    return "func" if 2 * votes[0] > votes[1] else "double_backward"


def trial(op: CurvatureOperator, impl: Any, batch: _data.Batch, v: list[Tensor],
          timed: bool) -> tuple[Tensor, dict]:
    """Products of the first batch with the vectors v; with `timed`, the seconds of `prepare` and of the
    best of two `apply` calls."""

    def clock() -> float:
        if op.device.type == "cuda":
            torch.cuda.synchronize(op.device)
        return time.perf_counter()

    with torch.enable_grad(), op.kernel():
        t0 = clock()
        state = impl.prepare(batch)
        t1 = clock()
        out = op.layout.join(impl.apply(state, v))
        t2 = clock()
        times = {"prepare": t1 - t0, "apply": t2 - t1}
        if timed:
            impl.apply(state, v)
            times["apply"] = min(times["apply"], clock() - t2)
    return out, times


def func_trial_pointless(op: CurvatureOperator, trials: dict, batch: _data.Batch) -> bool:
    """Skip timing func when double_backward already makes a full 2-vector pass cheaper than ~30 ms
    and forward-mode AD is not loaded yet: its one-time setup (torch scripts its jvp decompositions,
    0.4-2 s) could not pay for itself over a few hundred passes."""
    if "double_backward" not in trials or "torch._decomp.decompositions_for_jvp" in sys.modules:
        return False
    if not op._n_local:
        return False
    times = trials["double_backward"][2]
    per_pass = times["apply"] + (0 if cache_expected(op) else times["prepare"])
    return per_pass * op._n_local / _data.batch_size(batch[0]) < 0.03


def cache_expected(op: CurvatureOperator) -> bool:
    """Will the per-batch states of a pass over this rank's samples fit in the cache's half of the budget?"""
    n = op._n_local or 0
    return not op._cache_off and 0 < n * (op._state_bytes_per_sample or 0) <= op._budget // 2


def pick(op: CurvatureOperator, trials: dict) -> str:
    """The faster backend on the first batch (see the module docstring)."""
    if len(trials) == 1:
        return next(iter(trials))
    db = trials["double_backward"][2]
    cost_db = db["apply"] + (0 if cache_expected(op) else db["prepare"])
    cost_func = trials["func"][2]["prepare"] + trials["func"][2]["apply"]
    if op.device.type == "cpu":
        return "func" if cost_func * 1.2 < cost_db else "double_backward"
    return "double_backward" if cost_db * 1.2 < cost_func else "func"


def merge_target(op: CurvatureOperator, first: list[_data.Batch]) -> int | None:
    """Samples per merged batch, or None to keep the batches as given."""
    if op._merge_wanted is False or len(first) < 2 or not _data.concatenable(first):
        return None
    # one batch's products may use half the budget: the kept state plus about one state of tangents
    # per vector processed at a time (sequential vectors: 1; vmapped: assume 4)
    per_sample = op._state_bytes_per_sample * (2 if op._backend_name == "double_backward" else 5)
    target = int(op._budget // 2 // per_sample)
    sizes = [_data.batch_size(b[0]) for b in first]
    if target < sum(sizes) or not independent(op, first):
        return None
    return target


def independent(op: CurvatureOperator, first: list[_data.Batch]) -> bool:
    """Do the first two batches give the same outputs and mean loss when concatenated?"""
    tol = 10 * math.sqrt(torch.finfo(op.dtype).eps)
    with torch.no_grad(), op.kernel():
        outs = [op.forward(op.params, b[0]) for b in first]
        joined = _data.concat(first)
        out = op.forward(op.params, joined[0])
        if not isinstance(out, Tensor) or out.shape[0] != sum(o.shape[0] for o in outs):
            return False
        sep = torch.cat(outs)
        if (out - sep).abs().max() > tol * max(float(sep.abs().max()), 1e-30):
            return False
        n = [_data.batch_size(b[0]) for b in first]
        mean = sum(ni * op.loss_fn(o, b[1]) for ni, o, b in zip(n, outs, first)) / sum(n)
        return bool(abs(op.loss_fn(out, joined[1]) - mean) <= tol * max(float(abs(mean)), 1e-30))
