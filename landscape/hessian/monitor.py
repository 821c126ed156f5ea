"""Curvature while training: sharpness, edge-of-stability ratio and the gradient's top-eigenspace share
measured on a fixed probe set every K steps, each measurement warm-started from the previous one.

    monitor = CurvatureMonitor(loss_fn, (X_probe, y_probe), optimizer=opt, k=4, every=50)
    for step ...: ...; opt.step(); monitor(step, model, (X, y), loss)    # a training step callback
    monitor.records    # [{"step": 50, "block": "model", "metric": "lambda_max", "value": 41.3}, ...]

One measurement at parameters θ (docs/methods.md §G), with H the Hessian of the probe-set loss
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

The products H V come from one gradient graph of the probe set kept for the whole measurement
(`GradientGraphOperator`), so a measurement pays one forward and backward plus about two gradients'
arithmetic per vector. The model, its `.grad`, its buffers, its train/eval flags and the global RNG
are left exactly as found: training with the monitor is bit-identical to training without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.errors import LandscapeError
from landscape.hessian.operators import data as _data
from landscape.hessian.solvers.eigen import top_eigenpairs
from landscape.hessian.solvers.slq import slq_density
from landscape.hessian.solvers.trace import hutchpp_trace
from landscape.modes import preserved_modes

CURVATURE_METRICS = ("lambda_max", "top_eigenvalues", "trace", "negative_ratio", "grad_top_fraction",
                     "eos_ratio", "preconditioned_lambda_max")
DEFAULT_METRICS = ("lambda_max", "top_eigenvalues", "grad_top_fraction", "eos_ratio", "preconditioned_lambda_max")
BLOCK = "model"


class GradientGraphOperator:
    """H V for the probe-set loss from one kept gradient graph (double backward); a `LinearOperator`.

    Built at the model's current parameters (those with requires_grad, `named_parameters` order); the
    gradient g = ∇L is `self.gradient`. Products never write `.grad`. The forward runs with PyTorch's math
    attention kernel, the one whose second derivatives exist (default attention works).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, batches: Sequence[tuple[Any, Any]]):
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise LandscapeError("the model has no parameters that require grad")
        first = self.params[0]
        self.dtype, self.device = first.dtype, first.device
        self.shapes = [p.shape for p in self.params]
        self.dim = sum(p.numel() for p in self.params)
        total = sum(_data.batch_size(b[0]) for b in batches)
        grads: list[Tensor] | None = None
        # the math attention kernel: fused SDPA kernels have no double backward (the graph is built here)
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            for inputs, targets in batches:
                loss = loss_fn(model(*_data.as_args(inputs)), targets)
                if not isinstance(loss, Tensor) or loss.dim() != 0:
                    raise LandscapeError("loss_fn must return a scalar (the batch-mean loss)")
                w = _data.batch_size(inputs) / total
                gs = torch.autograd.grad(loss * w, self.params, create_graph=True, allow_unused=True)
                gs = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, gs)]
                grads = gs if grads is None else [a + b for a, b in zip(grads, gs)]
        self._live = [i for i, g in enumerate(grads) if g.requires_grad]
        self._grads = grads
        self.gradient = torch.cat([g.detach().reshape(-1) for g in grads])
        self.n_products = 0
        self._batched: bool | None = None

    def _split(self, rows: Tensor) -> list[Tensor]:
        """[c, dim] rows → per-parameter [c, *shape] views."""
        parts = rows.split([math.prod(s) for s in self.shapes], dim=1)
        return [p.reshape(rows.shape[0], *s) for p, s in zip(parts, self.shapes)]

    def _products(self, rows: list[Tensor], batched: bool) -> list[Tensor | None]:
        outs = [self._grads[i] for i in self._live]
        with torch.enable_grad():
            return list(torch.autograd.grad(outs, self.params, [rows[i] if batched else rows[i][0] for i in self._live],
                                            retain_graph=True, allow_unused=True, is_grads_batched=batched))

    def matmat(self, V: Tensor) -> Tensor:
        """H V for V [dim, c] (c columns in one vmapped backward when autograd can batch it)."""
        rows = V.to(self.device, self.dtype).T.contiguous()
        c = rows.shape[0]
        self.n_products += c
        if not self._live:
            return torch.zeros_like(rows).T
        parts = self._split(rows)
        if self._batched is not False and c > 1:
            try:
                hv = self._products(parts, True)
                self._batched = True
                return self._join(hv, c).T
            except RuntimeError:
                self._batched = False
        cols = [self._join(self._products([p[j:j + 1] for p in parts], False), 1) for j in range(c)]
        return torch.cat(cols).T

    def _join(self, hv: list[Tensor | None], c: int) -> Tensor:
        return torch.cat([(torch.zeros(c, math.prod(s), dtype=self.dtype, device=self.device) if h is None
                           else h.reshape(c, -1)) for h, s in zip(hv, self.shapes)], 1)


class ScaledOperator:
    """D A D (+ shift·D²) for a diagonal D given as a flat vector `d`: the symmetric form of a diagonal
    preconditioning, P^{-1/2} (A + shift·I) P^{-1/2} with d = P^{-1/2}."""

    def __init__(self, op: Any, d: Tensor, shift: float = 0.0):
        self.op, self.d, self.shift = op, d.to(op.device, op.dtype).reshape(-1, 1), float(shift)
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matmat(self, V: Tensor) -> Tensor:
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
    """"sgd", "adam" (Adam and AdamW) or None for anything else."""
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    return None


def sgd_threshold_factor(group: dict) -> float:
    """c with eos_ratio = (λ + wd)·η·c, i.e. the SGD iteration on a quadratic of curvature λ is stable
    iff eos_ratio < 1: c = (1−d)/(2+2β) for heavy ball with dampening d, (1+2β)/(2+2β) for Nesterov."""
    beta, damp = _scalar(group.get("momentum", 0.0)), _scalar(group.get("dampening", 0.0))
    if group.get("nesterov"):
        return (1 + 2 * beta) / (2 + 2 * beta)
    return (1 - damp) / (2 + 2 * beta)


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> Tensor | None:
    """Flat P = (1 − β1^t)(√(v_t/(1 − β2^t)) + ε) over `params` (None before the first step): the update
    of Adam / AdamW is θ ← θ − η P⁻¹ m_t (m_t the un-corrected first moment), Cohen et al. 2022 §2."""
    parts = []
    for p, group in zip(params, _group_of(optimizer, params)):
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            return None
        t = _scalar(state["step"])
        b1, b2 = (_scalar(b) for b in group["betas"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        P = (1 - b1 ** t) * ((v.double() / (1 - b2 ** t)).sqrt() + group["eps"])
        parts.append(P.reshape(-1))
    return torch.cat(parts)


def _split(batch: tuple[Any, Any], size: int) -> list[tuple[Any, Any]]:
    X, y = batch
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        return [batch]
    return [(X[i:i + size], y[i:i + size]) for i in range(0, len(X), size)]


def _same(groups: list[dict], keys: Sequence[str]) -> dict | None:
    """The first group when every group agrees on `keys` (one step size, one momentum...), else None."""
    first = groups[0]
    ok = all(str(g.get(key)) == str(first.get(key)) for g in groups for key in keys)
    return first if ok else None


class CurvatureMonitor:
    """A training step callback `monitor(step, model, batch, loss)` measuring curvature every `every` steps.

    Args:
        loss_fn: `loss_fn(outputs, targets)` → batch-mean loss (the training loss).
        data: the fixed probe set: an (X, y) pair or a list of (X, y) batches (moved to the model's device).
        optimizer: the training optimizer (for eos_ratio and the Adam preconditioner); None skips both.
        every: measure at steps divisible by `every` (1: whenever called).
        k: eigenpairs tracked (top_eigenvalues λ1..k, grad_top_fraction's subspace).
        metrics: a subset of CURVATURE_METRICS (default: all but trace and negative_ratio).
        tol: relative residual of every tracked Ritz pair (‖Hu − θu‖ ≤ tol·|θ1|).
        max_matmats: calls of the operator per eigen solve before it stops unconverged.
        trace_products: Hutch++ products for "trace"; slq_iters / slq_vectors: the SLQ of "negative_ratio".
        full_every: measure "trace" and "negative_ratio" (tens of products each) only at every
            `full_every`-th measurement, the first included (1: at every one).
        eps: negative_ratio counts the mass below −eps·λmax.
        warm: start each solve from the previous Ritz vectors (False: from random vectors every time).
        guard: add the unit gradient to the first start vector (see `_start`); False starts from the
            previous Ritz vectors alone (fewer products when they are still accurate, but a solve can
            then stay on an eigenvector that is no longer the top one).
        seed: the monitor's own generator (random start vectors, Hutch++ and SLQ vectors).
        batch_size: split the probe set into batches of this many samples (the kept graph still holds all).
        on_records: called with each measurement's new records (e.g. a run's probes.jsonl writer).
    `records` holds every record so far; `history` one dict per measurement (seconds, products, converged).
    """

    def __init__(self, loss_fn: Callable, data: Any, *, optimizer: torch.optim.Optimizer | None = None,
                 every: int = 1, k: int = 4, metrics: Sequence[str] = DEFAULT_METRICS, tol: float = 1e-3,
                 max_matmats: int = 40, trace_products: int = 30, slq_iters: int = 20, slq_vectors: int = 2,
                 full_every: int = 1,
                 eps: float = 1e-3, warm: bool = True, guard: bool = True, seed: int = 0, batch_size: int | None = None,
                 on_records: Callable[[list[dict]], None] | None = None):
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in CURVATURE_METRICS]
        if unknown or not metrics:
            raise LandscapeError(f"unknown curvature metrics {unknown or list(metrics)}; "
                                 f"known: {', '.join(CURVATURE_METRICS)}")
        for name, value, low in (("every", every, 1), ("k", k, 1), ("max_matmats", max_matmats, 1),
                                 ("trace_products", trace_products, 3), ("slq_iters", slq_iters, 2),
                                 ("slq_vectors", slq_vectors, 1), ("full_every", full_every, 1)):
            if not isinstance(value, int) or value < low:
                raise LandscapeError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if not (tol > 0 and eps > 0):
            raise LandscapeError(f"tol and eps must be positive, got {tol!r} and {eps!r}")
        self.loss_fn, self.optimizer, self.every, self.k, self.metrics = loss_fn, optimizer, every, k, metrics
        self.tol, self.max_matmats, self.eps, self.warm, self.guard = tol, max_matmats, eps, warm, guard
        self.trace_products, self.slq_iters, self.slq_vectors = trace_products, slq_iters, slq_vectors
        self.full_every = full_every
        self.batches = list(_data.DataSource(data))
        if batch_size is not None:
            if not isinstance(batch_size, int) or batch_size < 1:
                raise LandscapeError(f"batch_size must be a positive integer, got {batch_size!r}")
            self.batches = [part for b in self.batches for part in _split(b, batch_size)]
        self._moved: list | None = None
        self._moved_to: tuple | None = None
        self._gen = torch.Generator().manual_seed(seed)
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
        if previous is None or not self.warm:
            return None
        if not self.guard:
            return previous
        norm = torch.linalg.vector_norm(direction)
        if not torch.isfinite(norm) or norm == 0:
            return previous
        unit = (direction / norm).to(previous)
        start = previous.clone()
        sign = 1.0 if float(start[:, 0] @ unit) >= 0 else -1.0
        start[:, 0] = sign * start[:, 0] + unit
        return start

    def _seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen))

    def measure(self, model: nn.Module, step: int | None = None) -> list[dict]:
        """Measure at the model's current parameters; returns (and appends to `records`) the new records."""
        t0 = time.perf_counter()
        first = next((p for p in model.parameters() if p.requires_grad), None)
        if first is None:
            raise LandscapeError("the model has no parameters that require grad")
        if self._moved is None or self._moved_to != (first.device, first.dtype):
            self._moved = [_data.to_device(b, first.device, first.dtype) for b in self.batches]
            self._moved_to = (first.device, first.dtype)
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        cuda = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
        try:
            with torch.random.fork_rng(devices=cuda), preserved_modes(model, train=False):
                op = GradientGraphOperator(model, self.loss_fn, self._moved)
                values, info = self._measure(op)
                del op
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
        new = [{"step": step, "block": BLOCK, "metric": m, "value": float(v), **extra} for m, v, extra in values]
        self.records += new
        if self.on_records is not None:
            self.on_records(new)
        self.history.append({"step": step, "seconds": time.perf_counter() - t0, **info})
        return new

    def _measure(self, op: GradientGraphOperator) -> tuple[list[tuple[str, float, dict]], dict]:
        out: list[tuple[str, float, dict]] = []
        info: dict = {}
        want = set(self.metrics)
        kind = optimizer_kind(self.optimizer)
        groups = _group_of(self.optimizer, op.params) if kind else []
        if not bool(torch.isfinite(op.gradient).all()):   # a diverged model: say so, leave the stop to training
            return [(m, math.nan, {}) for m in ("lambda_max", "grad_top_fraction") if m in want], {"finite": False}
        lam = None
        if want & {"lambda_max", "top_eigenvalues", "grad_top_fraction"} or ("eos_ratio" in want and kind == "sgd"):
            pairs = top_eigenpairs(op, self.k, init=self._start(self._vectors, op.gradient), tol=self.tol,
                                   max_matmats=self.max_matmats, seed=self._seed())
            self._vectors = pairs.eigenvectors.detach()
            lam = float(pairs.eigenvalues[0])
            info.update(products=pairs.n_products, converged=pairs.converged,
                        relative_residual=float(pairs.residuals[0]) / max(abs(lam), 1e-300))
            if "lambda_max" in want:
                out += [("lambda_max", lam, {}), ("lambda_max_residual", float(pairs.residuals[0]), {})]
            if "top_eigenvalues" in want:
                out += [("top_eigenvalues", float(v), {"index": i + 1}) for i, v in enumerate(pairs.eigenvalues)]
            if "grad_top_fraction" in want:
                g = op.gradient.double()
                proj = pairs.eigenvectors.double().T @ g
                gg = float(g @ g)
                out.append(("grad_top_fraction", float(proj @ proj) / gg if gg > 0 else math.nan, {}))
        if kind == "sgd" and "eos_ratio" in want:
            group = _same(groups, ("lr", "momentum", "dampening", "nesterov", "weight_decay"))
            if group is not None:
                lr, wd = _scalar(group["lr"]), _scalar(group.get("weight_decay", 0.0))
                out.append(("eos_ratio", (lam + wd) * lr * sgd_threshold_factor(group), {}))
        if kind == "adam" and want & {"preconditioned_lambda_max", "eos_ratio"}:
            out += self._adam(op, groups, want, info)
        if len(self.history) % self.full_every:
            want -= {"trace", "negative_ratio"}
        if "trace" in want:
            tr = hutchpp_trace(op, products=self.trace_products, seed=self._seed())
            out += [("trace", tr.trace, {}), ("trace_stderr", tr.stderr, {})]
        if "negative_ratio" in want:
            sd = slq_density(op, min(self.slq_iters, op.dim), self.slq_vectors, self._seed())
            below = sd.nodes < -self.eps * sd.scale
            masses = (sd.weights * below).sum(axis=1)
            n = len(masses)
            err = float(masses.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            out += [("negative_ratio", float(masses.mean()), {}), ("negative_ratio_stderr", err, {})]
        info["total_products"] = op.n_products
        return out, info

    def _adam(self, op: GradientGraphOperator, groups: list[dict], want: set, info: dict) -> list:
        P = adam_preconditioner(self.optimizer, op.params)
        group = _same(groups, ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "amsgrad"))
        if P is None or group is None:
            return []
        decoupled = bool(group.get("decoupled_weight_decay")) or isinstance(self.optimizer, torch.optim.AdamW)
        wd = 0.0 if decoupled else _scalar(group.get("weight_decay", 0.0))
        d = P.rsqrt()
        start = self._start(self._pvectors, d.to(op.gradient) * op.gradient)
        pairs = top_eigenpairs(ScaledOperator(op, d, wd), 1, init=start, tol=self.tol,
                               max_matmats=self.max_matmats, seed=self._seed())
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
