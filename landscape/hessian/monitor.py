"""Curvature while training: sharpness, edge-of-stability ratio and the gradient's top-eigenspace share
measured on a fixed sample set every K steps, each measurement warm-started from the previous one.

    monitor = CurvatureMonitor(loss_fn, (X_fixed, y_fixed), optimizer=opt, every=50, options=MonitorOptions(k=4))
    for step ...: ...; opt.step(); monitor(step, model, (X, y), loss)    # a training step callback
    monitor.records    # [{"step": 50, "block": "model", "metric": "lambda_max", "value": 41.3}, ...]

One measurement at parameters θ (docs/methods.md §G), with H the Hessian of the sample-set loss
L(θ) = (1/N) Σ_i ℓ(f(x_i; θ), y_i) in eval mode and g = ∇L:

- lambda_max, top_eigenvalues λ1..k, lambda_max_residual ‖H u1 − λ1 u1‖: the engine's block Krylov
  solver (`top_eigenpairs(init=...)`) started from the previous measurement's Ritz vectors, the first
  one plus the unit gradient (a guard against a stale top vector; `_start`);
- grad_top_fraction = ‖U_kᵀ g‖² / ‖g‖² with U_k the k Ritz vectors (Gur-Ari, Roberts & Dyer 2018);
- eos_ratio: the sharpness over the optimizer's stability limit, 1 at the edge of stability
  (Cohen et al. 2021): SGD λ·η(1−d)/(2+2β) (momentum β, dampening d; Nesterov λ·η(1+2β)/(2+2β)),
  Adam / AdamW λ_P·η(1−β1)/(2+2β1) with λ_P the preconditioned sharpness (Cohen et al. 2022);
  λ includes a coupled L2 weight decay (H + wd·I), which the optimizer's iteration sees;
- preconditioned_lambda_max (Adam / AdamW): λmax of P⁻¹H = λmax of P^{-1/2} H P^{-1/2},
  P = (1 − β1^t)·(√(v_t / (1 − β2^t)) + ε) from the optimizer's state (the denominator of its last step);
- trace ± trace_stderr (Hutch++) and negative_ratio ± stderr (few-vector SLQ) when enabled, at every
  `full_every`-th measurement.

The products H V come from a `HessianOperator` built once per measurement on the double-backward backend with
its gradient graphs kept (`cache=True`), so a measurement pays one forward and backward plus about two
gradients' arithmetic per vector; the gradient g is read from the same graphs (`HessianOperator.gradient`).
A model sharded by FSDP2 is measured through `FSDPHessianOperator` (finite differences of first-order
gradients, every vector as this rank's shards, inner products completed across ranks); under DDP-style data
parallelism each rank passes its share of the sample set and the operator sums over the ranks.
The first measurement's operator runs the operator's symmetry and determinism checks; later ones skip them
(the model is the same function, only its weights moved). The model, its `.grad`, its buffers, its train/eval
flags and the global RNG are left exactly as found: training with the monitor is bit-identical to training
without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError, NonFiniteError
from landscape.hessian.operators.fsdp import FSDPHessianOperator, is_fsdp
from landscape.hessian.operators.operator import HessianOperator
from landscape.hessian.solvers.eigen import top_eigenpairs
from landscape.hessian.solvers.linalg import gram, row_dots
from landscape.hessian.solvers.protocol import complete_norms, sharded
from landscape.hessian.solvers.slq import slq_density
from landscape.hessian.solvers.trace import hutchpp_trace
from landscape.modes import preserved_modes
from landscape.objective import Objective

CURVATURE_METRICS = ("lambda_max", "top_eigenvalues", "trace", "negative_ratio", "grad_top_fraction",
                     "eos_ratio", "preconditioned_lambda_max")
DEFAULT_METRICS = ("lambda_max", "top_eigenvalues", "grad_top_fraction", "eos_ratio", "preconditioned_lambda_max")
BLOCK = "model"


class ScaledOperator:
    """D A D (+ shift·D²) for a diagonal D given as a flat vector `d`: the symmetric form of a diagonal
    preconditioning, P^{-1/2} (A + shift·I) P^{-1/2} with d = P^{-1/2}."""

    def __init__(self, op: Any, d: Tensor, shift: float = 0.0):
        self.op, self.d, self.shift = op, d.to(op.device, op.dtype).reshape(-1, 1), float(shift)
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device
        self.sharding = getattr(op, "sharding", None)

    def matmat(self, V: Tensor) -> Tensor:
        """D A D V (+ shift·D² V).

        Args:
            V: [dim, k] vectors.

        Returns:
            [dim, k] products.
        """
        V = V.to(self.device, self.dtype)
        out = self.d * self.op.matmat(self.d * V)
        return out + (self.shift * self.d * self.d) * V if self.shift else out


# ---- the optimizer's view: step size, momentum, preconditioner -----------------------------------

def _group_of(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> list[dict]:
    owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    missing = [i for i, p in enumerate(params) if id(p) not in owner]
    if missing:
        raise LandscapeError(f"{len(missing)} trained parameter(s) are not in the optimizer given to the monitor")
    return [owner[id(p)] for p in params]


def _scalar(v: Any) -> float:
    return float(v.item() if isinstance(v, Tensor) else v)


def optimizer_kind(optimizer: torch.optim.Optimizer | None) -> str | None:
    """"sgd", "adam" (Adam and AdamW) or None for anything else.

    Args:
        optimizer: the training optimizer, or None.

    Returns:
        The kind.
    """
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    return None


def sgd_threshold_factor(group: dict) -> float:
    """c with eos_ratio = (λ + wd)·η·c, i.e. the SGD iteration on a quadratic of curvature λ is stable
    iff eos_ratio < 1: c = (1−d)/(2+2β) for heavy ball with dampening d, (1+2β)/(2+2β) for Nesterov.

    Args:
        group: the SGD parameter group (momentum, dampening, nesterov).

    Returns:
        c.
    """
    beta, damp = _scalar(group.get("momentum", 0.0)), _scalar(group.get("dampening", 0.0))
    if group.get("nesterov"):
        return (1 + 2 * beta) / (2 + 2 * beta)
    return (1 - damp) / (2 + 2 * beta)


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> Tensor | None:
    """Flat P = (1 − β1^t)(√(v_t/(1 − β2^t)) + ε) over `params` (None before the first step): the update
    of Adam / AdamW is θ ← θ − η P⁻¹ m_t (m_t the un-corrected first moment), Cohen et al. 2022 §2.

    Args:
        optimizer: an Adam or AdamW optimizer.
        params: the measured parameters, in the operator's order.

    Returns:
        P as a flat float64 vector, or None.
    """
    parts = []
    for p, group in zip(params, _group_of(optimizer, params)):
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            return None
        t = _scalar(state["step"])
        b1, b2 = (_scalar(b) for b in group["betas"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        v = v.to_local() if hasattr(v, "to_local") else v  # FSDP2: this rank's shard, as the operator's vectors
        P = (1 - b1 ** t) * ((v.double() / (1 - b2 ** t)).sqrt() + group["eps"])
        parts.append(P.reshape(-1))
    return torch.cat(parts)


def _same(groups: list[dict], keys: Sequence[str]) -> dict | None:
    """The first group when every group agrees on `keys` (one step size, one momentum...), else None."""
    first = groups[0]
    ok = all(str(g.get(key)) == str(first.get(key)) for g in groups for key in keys)
    return first if ok else None


@dataclass(frozen=True)
class MonitorOptions:
    """What a `CurvatureMonitor` measures and how precisely (validated on construction).

    Args:
        k: eigenpairs tracked (top_eigenvalues λ1..k, grad_top_fraction's subspace).
        metrics: a subset of CURVATURE_METRICS (default: all but trace and negative_ratio); one name is one
            metric.
        tol: relative residual of every tracked Ritz pair (‖Hu − θu‖ ≤ tol·|θ1|).
        max_matmats: calls of the operator per eigen solve before it stops unconverged.
        trace_products: Hutch++ products for "trace".
        slq_iters: Lanczos steps of the SLQ of "negative_ratio".
        slq_vectors: random vectors of that SLQ.
        full_every: measure "trace" and "negative_ratio" (tens of products each) only at every
            `full_every`-th measurement, the first included (1: at every one).
        eps: negative_ratio counts the mass below −eps·λmax.
        warm: start each solve from the previous Ritz vectors (False: from random vectors every time).
        guard: add the unit gradient to the first start vector (see `CurvatureMonitor._start`); False starts
            from the previous Ritz vectors alone (fewer products when they are still accurate, but a solve can
            then stay on an eigenvector that is no longer the top one).
        seed: the monitor's own generator (random start vectors, Hutch++ and SLQ vectors).
        batch_size: split the sample set into batches of this many samples (the kept graphs still hold all).

    Raises:
        LandscapeError: an unknown metric, a count below its minimum, or a non-positive tol / eps.
    """

    k: int = 4
    metrics: Sequence[str] = DEFAULT_METRICS
    tol: float = 1e-3
    max_matmats: int = 40
    trace_products: int = 30
    slq_iters: int = 20
    slq_vectors: int = 4
    full_every: int = 1
    eps: float = 1e-3
    warm: bool = True
    guard: bool = True
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        object.__setattr__(self, "metrics", metrics)
        unknown = [m for m in metrics if m not in CURVATURE_METRICS]
        if unknown or not metrics:
            raise LandscapeError(f"unknown curvature metrics {unknown or list(metrics)}; "
                                 f"known: {', '.join(CURVATURE_METRICS)}")
        for name, low in (("k", 1), ("max_matmats", 1), ("trace_products", 3), ("slq_iters", 2),
                          ("slq_vectors", 1), ("full_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise LandscapeError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if not (self.tol > 0 and self.eps > 0):
            raise LandscapeError(f"tol and eps must be positive, got {self.tol!r} and {self.eps!r}")


class CurvatureMonitor:
    """A training step callback `monitor(step, model, batch, loss)` measuring curvature every `every` steps.

    Args:
        loss_fn: `loss_fn(outputs, targets)` → batch-mean loss (the training loss).
        data: the fixed sample set, in any form `landscape.objective.Batches` accepts (moved to the model's
            device and dtype); loss_fn=None measures the model's own loss (HF models).
        optimizer: the training optimizer (for eos_ratio and the Adam preconditioner); None skips both.
        every: measure at steps divisible by `every` (1: whenever called).
        options: what is measured and how precisely (`MonitorOptions`: k, metrics, tolerances, seed, ...).
        on_records: called with each measurement's new records (e.g. a run's probes.jsonl writer).

    `records` holds every record so far; `history` one dict per measurement (seconds, products, converged).
    """

    def __init__(self, loss_fn: Callable | None, data: Any, *, optimizer: torch.optim.Optimizer | None = None,
                 every: int = 1, options: MonitorOptions = MonitorOptions(),
                 on_records: Callable[[list[dict]], None] | None = None):
        if not isinstance(every, int) or every < 1:
            raise LandscapeError(f"every must be an integer ≥ 1, got {every!r}")
        if not isinstance(options, MonitorOptions):
            raise LandscapeError(f"options must be a MonitorOptions, got {type(options).__name__}")
        self.loss_fn, self.optimizer, self.every, self.options = loss_fn, optimizer, every, options
        self._data = data
        self._objective: Objective | None = None
        self._gen = torch.Generator().manual_seed(options.seed)
        self._vectors: Tensor | None = None
        self._pvectors: Tensor | None = None
        self.on_records = on_records
        self.records: list[dict] = []
        self.history: list[dict] = []

    def __call__(self, step: int, model: nn.Module, batch: Any = None, loss: Any = None) -> None:
        if step % self.every == 0:
            self.measure(model, step)

    def _start(self, previous: Tensor | None, direction: Tensor) -> Tensor | None:
        """Start block of a warm solve: the previous Ritz vectors, the first one plus the unit `direction`
        (the gradient, sign-aligned). Krylov iterations from the old top vector alone can settle on a pair
        that is no longer the top one when the order changed; the gradient lies mostly in the current top
        eigenspace (docs/methods.md §G.3), so mixing it in costs no product and guards against that."""
        if previous is None or not self.options.warm:
            return None
        if not self.options.guard:
            return previous
        norm = complete_norms(torch.linalg.vector_norm(direction, dtype=torch.float64).reshape(1))[0]
        if not torch.isfinite(norm) or norm == 0:
            return previous
        unit = (direction / norm.to(direction)).to(previous)
        start = previous.clone()
        sign = 1.0 if float(row_dots(start[:, 0][None], unit[None])[0]) >= 0 else -1.0
        start[:, 0] = sign * start[:, 0] + unit
        return start

    def _seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen))

    def measure(self, model: nn.Module, step: int | None = None) -> list[dict]:
        """Measure at the model's current parameters; returns (and appends to `records`) the new records.

        Args:
            model: the trained model (its modes, buffers, `.grad` and the RNG are restored afterwards).
            step: the training step, recorded with each value.

        Returns:
            The records {"step", "block", "metric", "value"[, "index"]}.
        """
        t0 = time.perf_counter()
        if self._objective is None or self._objective.model is not model:
            self._objective = Objective(model, self.loss_fn, self._data, batch_size=self.options.batch_size)
        cuda = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
        first = not self.history
        with torch.random.fork_rng(devices=cuda), preserved_modes(model, train=False):
            try:
                op = FSDPHessianOperator(self._objective, seed=self._seed()) if is_fsdp(model) else HessianOperator(
                    self._objective, backend="double_backward", cache=True, merge_batches=False,
                    check_deterministic=first, check_symmetric=first)
            except NonFiniteError:  # a diverged model: say so, leave the stop to training
                op = None
                values, info = self._diverged(), {"finite": False}
            if op is not None:
                chosen = set(op.param_names)
                with sharded(op):
                    values, info = self._measure(op, [p for n, p in model.named_parameters() if n in chosen])
            del op
        new = [{"step": step, "block": BLOCK, "metric": m, "value": float(v), **extra} for m, v, extra in values]
        self.records += new
        if self.on_records is not None:
            self.on_records(new)
        self.history.append({"step": step, "seconds": time.perf_counter() - t0, **info})
        return new

    def _measure(self, op: HessianOperator, params: list[Tensor]) -> tuple[list[tuple[str, float, dict]], dict]:
        out: list[tuple[str, float, dict]] = []
        info: dict = {}
        want = set(self.options.metrics)
        kind = optimizer_kind(self.optimizer)
        groups = _group_of(self.optimizer, params) if kind else []
        gradient = op.gradient()
        if not bool(torch.isfinite(gradient).all()):   # a diverged model: say so, leave the stop to training
            return self._diverged(), {"finite": False}
        lam = None
        if want & {"lambda_max", "top_eigenvalues", "grad_top_fraction"} or ("eos_ratio" in want and kind == "sgd"):
            pairs = top_eigenpairs(op, self.options.k, init=self._start(self._vectors, gradient),
                                   tol=self.options.tol, max_matmats=self.options.max_matmats, seed=self._seed())
            self._vectors = pairs.eigenvectors.detach()
            lam = float(pairs.eigenvalues[0])
            info.update(products=pairs.n_products, converged=pairs.converged,
                        relative_residual=float(pairs.residuals[0]) / max(abs(lam), 1e-300))
            if "lambda_max" in want:
                out += [("lambda_max", lam, {}), ("lambda_max_residual", float(pairs.residuals[0]), {})]
            if "top_eigenvalues" in want:
                out += [("top_eigenvalues", float(v), {"index": i + 1}) for i, v in enumerate(pairs.eigenvalues)]
            if "grad_top_fraction" in want:
                g = gradient.double()[None]
                proj = gram(pairs.eigenvectors.double().T, g)[:, 0]
                gg = float(row_dots(g, g)[0])
                out.append(("grad_top_fraction", float(proj @ proj) / gg if gg > 0 else math.nan, {}))
        if kind == "sgd" and "eos_ratio" in want:
            group = _same(groups, ("lr", "momentum", "dampening", "nesterov", "weight_decay"))
            if group is not None:
                lr, wd = _scalar(group["lr"]), _scalar(group.get("weight_decay", 0.0))
                out.append(("eos_ratio", (lam + wd) * lr * sgd_threshold_factor(group), {}))
        if kind == "adam" and want & {"preconditioned_lambda_max", "eos_ratio"}:
            out += self._adam(op, params, gradient, groups, want, info)
        if len(self.history) % self.options.full_every:
            want -= {"trace", "negative_ratio"}
        if "trace" in want:
            tr = hutchpp_trace(op, products=self.options.trace_products, seed=self._seed())
            out += [("trace", tr.trace, {}), ("trace_stderr", tr.stderr, {})]
        if "negative_ratio" in want:
            sd = slq_density(op, min(self.options.slq_iters, op.dim), self.options.slq_vectors, self._seed())
            out += [("negative_ratio", sd.negative_ratio(self.options.eps), {}),
                    ("negative_ratio_stderr", sd.negative_ratio_stderr(self.options.eps), {})]
        info["total_products"] = op.n_products
        return out, info

    def _diverged(self) -> list[tuple[str, float, dict]]:
        return [(m, math.nan, {}) for m in ("lambda_max", "grad_top_fraction") if m in self.options.metrics]

    def _adam(self, op: HessianOperator, params: list[Tensor], gradient: Tensor, groups: list[dict], want: set,
              info: dict) -> list:
        P = adam_preconditioner(self.optimizer, params)
        group = _same(groups, ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "amsgrad"))
        if P is None or group is None:
            return []
        decoupled = bool(group.get("decoupled_weight_decay")) or isinstance(self.optimizer, torch.optim.AdamW)
        wd = 0.0 if decoupled else _scalar(group.get("weight_decay", 0.0))
        d = P.rsqrt()
        start = self._start(self._pvectors, d.to(gradient) * gradient)
        pairs = top_eigenpairs(ScaledOperator(op, d, wd), 1, init=start, tol=self.options.tol,
                               max_matmats=self.options.max_matmats, seed=self._seed())
        self._pvectors = pairs.eigenvectors.detach()
        lam = float(pairs.eigenvalues[0])
        info.update(preconditioned_products=pairs.n_products, preconditioned_converged=pairs.converged)
        out = []
        if "preconditioned_lambda_max" in want:
            out += [("preconditioned_lambda_max", lam, {}),
                    ("preconditioned_lambda_max_residual", float(pairs.residuals[0]), {})]
        if "eos_ratio" in want:
            b1 = _scalar(group["betas"][0])
            out.append(("eos_ratio", lam * _scalar(group["lr"]) * (1 - b1) / (2 + 2 * b1), {}))
        return out
