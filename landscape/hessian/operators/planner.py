"""The planning steps of `landscape.hessian.operators.plan.make_plan` over one snapshot and request (`Planner`):
size the state, try the candidate backends on the first batch, time and pick one, and check its products
(the plan module's docstring says how each step decides).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor

from landscape import distributed as _dist
from landscape import memory
from landscape.errors import LandscapeError, first_line
from landscape.hessian.operators import budgeted, checks
from landscape.hessian.operators.backends import Sizing
from landscape.hessian.operators.flat import Snapshot
from landscape.hessian.operators.plan_types import Plan, Request, compute_context
from landscape.objective import Batch, is_attention_error

_FAILURES = (RuntimeError, NotImplementedError)
EXACT = ("double_backward", "func")
"""The exact backends "auto" chooses between, in trial order."""
FALLBACK = "finite_difference"
"""The approximate backend "auto" turns to only when no exact backend gives symmetric products."""
SLOW_SHARE = 0.5
"""On a CPU, func is not timed when modules of its backend's `slow_on_cpu` types (the Hessian's: convolutions)
hold more than this share of the differentiated parameters: it measured slower there on every such net."""


class Planner:
    """The planning steps over one snapshot and request (state lives here, never in the operator).

    Args:
        snap: the objective at θ.
        req: what the caller asked.
    """

    def __init__(self, snap: Snapshot, req: Request):
        self.snap, self.req = snap, req
        self.math = False
        self.rejected: dict[str, str] = {}
        self.sizing = Sizing(1, req.budget)
        self.product_determinism = True
        self.choice = "named" if req.backend != "auto" else ""
        self.precision = req.autocast or snap.dtype     # what the checks' tolerances follow

    def kernel(self) -> ExitStack:
        """The attention kernel (math once fused kernels failed) and the request's autocast."""
        return compute_context(self.math, self.req.autocast, self.snap.device)

    def light(self) -> tuple[Plan, Any, Any]:
        """The named backend without trial products: its prepared first batch sizes the state (and is kept for
        the first pass); only the loss checks of `Objective.check` run (they also see attention: exact
        products then run under the math kernel)."""
        snap = self.snap
        batch = snap.objective.prepare(snap.objective.data.first(1)[0], snap.device, snap.dtype)
        self.math = budgeted.checked(snap, batch)[1] and self.req.backend in EXACT
        state = self.measured_state(self.req.backend, batch)
        skipped = ("finite: skipped", "deterministic: skipped", "symmetric: skipped")
        impl = self.req.backends[self.req.backend](snap, self.sizing)
        return Plan(self.req.backend, self.sizing, None, self.math, None, {}, skipped, choice=self.choice,
                    autocast=self.req.autocast), impl, state

    def measured_state(self, name: str, batch: Batch) -> Any:
        """`name`'s prepared state of `batch`, whose saved tensors set the sizing (per sample).

        Args:
            name: the backend.
            batch: the prepared first batch.

        Returns:
            The backend's prepared state of `batch`.
        """
        impl = self.req.backends[name](self.snap, self.sizing)
        with torch.enable_grad(), self.kernel():
            state, nbytes = memory.measure(lambda: impl.prepare(batch), self.snap.device)
        self.sizing = Sizing(max(1, nbytes // max(1, batch.size)), self.req.budget)
        return state

    def budgeted(self, probe: budgeted.Probe, why: str) -> tuple[Plan, Any, Any]:
        """The plan when the trial is not affordable (`budgeted.py`): the requested backend ("auto":
        double_backward) prepares the first batch once, measured; the loss is computed twice; finite and
        symmetric products are checked on the first data pass; attention runs under the math kernel when the
        probe saw it (exact backends).

        Args:
            probe: the measured forward pass of the first batch.
            why: why the trial is not affordable.

        Returns:
            (the plan, the backend, its prepared state of the first batch).
        """
        snap, name = self.snap, ("double_backward" if self.req.backend == "auto" else self.req.backend)
        if self.req.check_deterministic:
            budgeted.check_loss_twice(snap, probe)
        self.math = probe.attention and name in EXACT
        state = self.measured_state(name, probe.first[0])
        default = "; double_backward by default" if self.req.backend == "auto" else ""
        done = (f"backend trial: skipped ({why}){default}",
                "deterministic: the first batch's loss twice (products: skipped)" if self.req.check_deterministic
                else "deterministic: skipped",
                "finite: on the first pass",
                "symmetric: on the first pass" if self.req.check_symmetric else "symmetric: skipped",
                "merging: skipped")
        later = ("finite", *(("symmetric",) if self.req.check_symmetric else ()))
        plan = Plan(name, self.sizing, None, self.math, None, {}, done, later,
                    choice=self.choice or f"budgeted: trial skipped ({why})", autocast=self.req.autocast)
        return plan, self.req.backends[name](snap, self.sizing), state

    def try_backends(self, probe: budgeted.Probe) -> tuple[dict, list[Tensor], list[Batch]]:
        """Trial products of the candidates on the first batch: ({name: (impl, product, times)}, three random
        vectors per parameter [3, *shape] (the trials use two), the first two prepared batches).

        Args:
            probe: the measured forward pass of the first batch (its prepared batches).

        Returns:
            (trials, vectors, first batches).
        """
        snap, first = self.snap, probe.first
        # a kept gradient graph (create_graph=True) holds about twice the forward pass's saved tensors
        self.sizing = Sizing(max(1, 2 * probe.forward_bytes // max(1, first[0].size)), self.req.budget)
        gen = torch.Generator().manual_seed(self.req.seed)  # drawn in float32 unless float64: no wide copy
        drawn = torch.float64 if snap.dtype == torch.float64 else torch.float32
        v = snap.layout.split(torch.randn(3, snap.layout.dim, generator=gen, dtype=drawn).to(snap.device, snap.dtype))
        names = EXACT if self.req.backend == "auto" else (self.req.backend,)
        trials, errors = self._run_trials(first[0], [t[:2] for t in v], names)
        if not trials and is_attention_error(list(errors.values())):
            self.math = True
            trials, errors = self._run_trials(first[0], [t[:2] for t in v], names)
        if not trials and self.req.backend == "auto" and FALLBACK in self.req.backends:
            self.math = False  # first-order products need no math kernel
            self.rejected.update(errors)
            trials, more = self._run_trials(first[0], [t[:2] for t in v], (FALLBACK,))
            errors.update(more)
        if not trials:
            if self.req.backend != "auto":
                raise LandscapeError(f"backend {self.req.backend!r} cannot differentiate this model: "
                                     f"{errors[self.req.backend]}")
            raise LandscapeError("no backend can differentiate this model ("
                                 + "; ".join(f"{n}: {e}" for n, e in errors.items()) + ")")
        return trials, v, first

    def _run_trials(self, batch: Batch, v: list[Tensor], names: tuple[str, ...]) -> tuple[dict, dict[str, str]]:
        trials, errors = {}, {}
        for name in names:
            if name == "func" and len(names) > 1 and (why := self.func_trial_pointless(trials, batch)):
                self.choice = f"func not timed: {why}"
                continue
            compared = len(names) > 1 and not (name == "double_backward" and self.func_trial_pointless({}, batch))
            impl = self.req.backends[name](self.snap, self.sizing)
            try:
                trials[name] = (impl, *self.trial(impl, batch, v, timed=compared))
            except _FAILURES as e:
                errors[name] = first_line(e, limit=200)
        return trials, errors

    def trial(self, impl: Any, batch: Batch, v: list[Tensor], timed: bool) -> tuple[Tensor, dict, Any]:
        """Products of `batch` with the vectors v, with the seconds of `prepare` and of `apply` (with `timed`,
        the best of two calls), and the prepared state.

        Args:
            impl: the backend.
            batch: the prepared batch.
            v: the vectors, per parameter [k, *shape].
            timed: call `apply` a second time and keep the faster.

        Returns:
            (the products, {"prepare", "apply"} seconds, the prepared state).
        """
        device = self.snap.device
        with torch.enable_grad(), self.kernel():
            t0 = budgeted.clock(device)
            state = impl.prepare(batch)
            t1 = budgeted.clock(device)
            out = self.snap.layout.join(impl.apply(state, v))
            t2 = budgeted.clock(device)
            times = {"prepare": t1 - t0, "apply": t2 - t1}
            if timed:
                impl.apply(state, v)
                times["apply"] = min(times["apply"], budgeted.clock(device) - t2)
        return out, times, state

    def func_trial_pointless(self, trials: dict, batch: Batch) -> str:
        """Why timing func could not pay (empty: time it), given the trials made so far: on a CPU, modules it is
        slow through hold most of the parameters (`SLOW_SHARE`); or double_backward already makes a full
        2-vector pass cheaper than ~30 ms and forward-mode AD is not loaded yet, so its one-time setup could
        not pay for itself over a few hundred passes.

        Args:
            trials: the trials made so far ({name: (impl, product, times, ...)}).
            batch: the first batch.

        Returns:
            The reason, or "" to time func.
        """
        kinds, share = self.slow_share()
        if self.snap.device.type == "cpu" and share > SLOW_SHARE:
            return f"{kinds} modules hold {share:.0%} of the parameters (func is slower through them on a CPU)"
        if "double_backward" not in trials or "torch._decomp.decompositions_for_jvp" in sys.modules:
            return ""
        if not self.req.local_samples:
            return ""
        times = trials["double_backward"][2]
        per_pass = times["apply"] + (0 if self.cache_expected() else times["prepare"])
        if per_pass * self.req.local_samples / batch.size < 0.03:
            return f"a pass costs {per_pass * self.req.local_samples / batch.size * 1e3:.0f} ms"
        return ""

    def slow_share(self) -> tuple[str, float]:
        """(their type names, their share of the differentiated parameters) for the modules func's backend is
        slow through on a CPU (its `slow_on_cpu`)."""
        slow = getattr(self.req.backends.get("func"), "slow_on_cpu", ())
        names, kinds = set(), set()
        for prefix, module in self.snap.objective.model.named_modules():
            if isinstance(module, slow):
                kinds.add(type(module).__name__)
                names |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
        share = sum(p.numel() for n, p in self.snap.params.items() if n in names) / max(1, self.snap.layout.dim)
        return "/".join(sorted(kinds)), share

    def cache_expected(self) -> bool:
        """Will the per-batch states of a pass over this rank's samples fit in the cache's half of the budget?"""
        n = self.req.local_samples or 0
        return self.req.cache is not False and 0 < n * self.sizing.state_bytes_per_sample <= self.req.budget // 2

    def pick(self, trials: dict) -> str:
        """The faster backend on the first batch (`landscape.hessian.operators.plan`'s docstring, step 2).

        Args:
            trials: {name: (impl, product, times, ...)}.

        Returns:
            The backend's name.
        """
        if len(trials) == 1:
            return next(iter(trials))
        db = trials["double_backward"][2]
        cost_db = db["apply"] + (0 if self.cache_expected() else db["prepare"])
        cost_func = trials["func"][2]["prepare"] + trials["func"][2]["apply"]
        self.choice = f"timed on the first batch: double_backward {cost_db:.3g} s, func {cost_func:.3g} s"
        if self.snap.device.type == "cpu":
            return "func" if cost_func * 1.2 < cost_db else "double_backward"
        return "double_backward" if cost_db * 1.2 < cost_func else "func"

    def agree_backend(self, trials: dict) -> str:
        """The locally faster backend; under torch.distributed, func only when most ranks' timings chose it.

        Args:
            trials: {name: (impl, product, times, ...)}.

        Returns:
            The backend's name.
        """
        local = self.pick(trials)
        if not self.req.distributed:
            return local
        votes = torch.tensor([float(local == "func"), 1.0], dtype=torch.float64, device=_dist.comm_device())
        _dist.all_reduce_sum(votes)
        return "func" if 2 * votes[0] > votes[1] else "double_backward"

    def validate(self, name: str, trials: dict, v: list[Tensor], first: list[Batch]) -> float:
        """Finite, deterministic and symmetric products of `name`.

        Args:
            name: the backend.
            trials: {name: (impl, product, times, state)}; with the determinism check every kept state is
                released and `name`'s replaced by the one prepared anew.
            v: the three vectors, per parameter [3, *shape].
            first: the first prepared batches.

        Returns:
            The measured asymmetry.
        """
        v2 = [t[:2] for t in v]
        if name not in trials:  # skipped, or chosen by another rank's timing
            impl = self.req.backends[name](self.snap, self.sizing)
            try:
                trials[name] = (impl, *self.trial(impl, first[0], v2, timed=False))
            except _FAILURES as e:
                raise LandscapeError(f"backend {name!r} cannot differentiate this model: {first_line(e)}") from e
        impl, p1, times = trials[name][:3]
        checks.check_finite(p1, "the curvature products")
        V, HV = self.snap.layout.join(v2), p1
        if self.req.check_deterministic and self.product_determinism:
            for other in trials:  # release the kept states (graphs) before preparing the batch again
                trials[other] = (*trials[other][:3], None)
            with torch.enable_grad(), self.kernel():
                state = impl.prepare(first[0])
                p2 = self.snap.layout.join(impl.apply(state, v))
            trials[name] = (impl, p1, times, state)
            checks.check_same(p1, p2[:2], "products")
            V, HV = self.snap.layout.join(v), p2
        return checks.check_symmetric(V, HV, self.snap.objective.model, self.precision)

    def validate_in_turn(self, chosen: str, trials: dict, v: list[Tensor], first: list[Batch]) -> tuple[str, float]:
        """The chosen backend if it passes `validate`; with backend="auto" a backend whose products are not
        symmetric (a wrong rule in its autodiff path) gives way to the other one.

        Args:
            chosen: the backend picked by timing.
            trials: as in `validate`.
            v: as in `validate`.
            first: as in `validate`.

        Returns:
            (the backend kept, its measured asymmetry).
        """
        auto = self.req.backend == "auto"
        candidates = [chosen, *([n for n in self.req.backends if n != chosen] if auto else [])]
        failures: list[LandscapeError] = []
        for name in candidates:
            try:
                return name, self.validate(name, trials, v, first)
            except LandscapeError as e:
                fallback_failed = failures and (name == FALLBACK or "cannot differentiate" in str(e))
                if "not symmetric" not in str(e) and not fallback_failed:
                    raise
                failures.append(e)
                self.rejected[name] = str(e)
        raise failures[0]
