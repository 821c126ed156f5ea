"""What construction may afford: the first batch's probe, the rule that scales the plan's trial with it, and the
product checks deferred to the first data pass when the trial is not affordable.

A full trial (`planner.py`: products of two vectors by every candidate backend, a second product for the
determinism check, merging tests) costs about `TRIAL_FORWARDS` forward passes of the first batch and holds
about `TRIAL_GRAPHS` gradient graphs at once. It is made when both are small:

    TRIAL_FORWARDS · t_forward ≤ TRIAL_SECONDS      and      TRIAL_GRAPHS · 2 · forward_bytes ≤ budget / 2

(t_forward, forward_bytes: time and saved tensors of the probe, one forward pass of the first batch with its
graph; a kept gradient graph holds about twice the forward's). Otherwise — a language model at scale — the
plan is budgeted: the chosen backend ("auto": double_backward) prepares the first batch once, measured, and
that state is kept for the first pass; the checks cost no product:
- deterministic: the first batch's loss computed twice (the probe's and one more forward) must agree to
  1e3·eps relative (functional dropout changes the loss as it changes the products);
- finite and symmetric: on the first data pass's own products (`FirstPassChecks`: uᵀHv = vᵀHu over the first
  two or three vectors the operator is given), raised from that `matmat` before any result is returned;
- attention: when the probe called `F.scaled_dot_product_attention`, exact products run under the math SDPA
  kernel (the fused kernels have no second derivative) without a failing trial to discover it.
Construction then costs the loss checks, two forwards and one prepared batch (measured on GPT-2-small,
BENCHMARKS.md), and its memory is one gradient graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from landscape import memory
from landscape.hessian.operators import checks
from landscape.hessian.operators.flat import Snapshot
from landscape.objective import Batch

TRIAL_FORWARDS = 40
"""A full trial's cost in forward passes of the first batch (measured 25–40 on MLPs and GPT-2 configs)."""
TRIAL_SECONDS = 2.0
"""The time a full trial may take (longer: the plan is budgeted)."""
TRIAL_GRAPHS = 4
"""Gradient graphs a full trial holds at once (two backends' states, the determinism check's, the tangents)."""


class _AttentionSpy(TorchFunctionMode):
    """Notes whether `F.scaled_dot_product_attention` was called (a fused kernel may then run)."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.seen = True
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Probe:
    """One forward pass of the first batch with its graph, measured.

    Attributes:
        first: the first two prepared batches (one when the data holds one).
        seconds: a forward's wall time (the faster of the loss check's and the probe's).
        forward_bytes: the saved tensors of its graph (`landscape.memory.measure`).
        loss: ℓ of the first batch.
        attention: whether it called scaled-dot-product attention.
    """

    first: list[Batch]
    seconds: float
    forward_bytes: int
    loss: float
    attention: bool


def probe(snap: Snapshot) -> Probe:
    """The first batches, checked by `Objective.check`, and the measured forward pass of the first.

    Args:
        snap: the objective at θ.

    Returns:
        The `Probe`.
    """
    first = [snap.objective.prepare(b, snap.device, snap.dtype) for b in snap.objective.data.first(2)]
    t_check, seen = checked(snap, first[0])
    leaves = {n: p.detach().requires_grad_() for n, p in snap.params.items()}
    t0 = clock(snap.device)
    with torch.enable_grad():
        value, nbytes = memory.measure(lambda: snap.loss(leaves, first[0]), snap.device)
    # the faster of two forwards (the loss check's and the graph's): a process descheduled once on a loaded
    # machine must not turn a small model's plan into a budgeted one
    return Probe(first, min(t_check, clock(snap.device) - t0), nbytes, float(value.detach()), seen)


def checked(snap: Snapshot, batch: Batch) -> tuple[float, bool]:
    """`Objective.check` of the first batch (its loss checks), timed, noting whether the forward called
    scaled-dot-product attention (then exact products need the math kernel).

    Args:
        snap: the objective at θ.
        batch: the prepared first batch.

    Returns:
        (seconds, attention seen).
    """
    spy = _AttentionSpy()
    t0 = clock(snap.device)
    with spy:
        snap.objective.check(batch, snap.state(snap.params))
    return clock(snap.device) - t0, spy.seen


def affordable(p: Probe, budget: int) -> tuple[bool, str]:
    """Whether the full trial fits (see the module docstring), and why not when it does not.

    Args:
        p: the probe of the first batch.
        budget: the operator's bytes.

    Returns:
        (affordable, the reason it is not; "" when it is).
    """
    seconds = TRIAL_FORWARDS * p.seconds
    graphs = TRIAL_GRAPHS * 2 * p.forward_bytes
    if seconds > TRIAL_SECONDS:
        return False, f"a forward pass takes {p.seconds:.2g} s: a trial of ~{TRIAL_FORWARDS} would exceed " \
                      f"{TRIAL_SECONDS:g} s"
    if graphs > budget // 2:
        return False, f"{TRIAL_GRAPHS} gradient graphs ({graphs / 2**30:.2g} GiB) exceed half the budget " \
                      f"({budget / 2**31:.2g} GiB)"
    return True, ""


def check_loss_twice(snap: Snapshot, p: Probe) -> None:
    """The first batch's loss once more (no graph), against the probe's: a random model is refused.

    Args:
        snap: the objective at θ.
        p: the measured forward pass of the first batch.

    Raises:
        NonFiniteError, LandscapeError: a non-finite loss or two losses that differ.
    """
    with torch.no_grad():
        again = snap.loss(snap.params, p.first[0])
    losses = torch.stack([torch.tensor(p.loss, dtype=snap.dtype), again.detach().to("cpu", snap.dtype)])
    checks.check_finite(losses, "the first batch's losses")
    checks.check_same(losses[0], losses[1], "losses of the first batch")


class FirstPassChecks:
    """Finite and symmetric products, checked on the first vectors the operator applies (`matmat`'s own).

    `observe(V, HV)` takes [k, dim] rows: the products must be finite; with `symmetric`, once two vectors were
    seen (three at most are used; a first pass of one vector is kept until the next) it runs
    `checks.check_symmetric` and records the asymmetry. `done` turns True when nothing is left to check.

    Args:
        model: for the likely cause named by a failure.
        dtype: the compute precision (the tolerance's).
        symmetric: check uᵀHv = vᵀHu (else only finiteness).
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, symmetric: bool = True):
        self.model, self.dtype, self.symmetric = model, dtype, symmetric
        self.rows: list[tuple[Tensor, Tensor]] = []
        self.asymmetry: float | None = None
        self.done = False

    def observe(self, V: Tensor, HV: Tensor) -> None:
        """Check the products HV of the rows V (a LandscapeError when they fail).

        Args:
            V: [k, dim] vectors of a product.
            HV: their products [k, dim].
        """
        checks.check_finite(HV, "the curvature products")
        if not self.symmetric:
            self.done = True
            return
        need = 3 - sum(v.shape[0] for v, _ in self.rows)
        self.rows.append((V[:need].detach().clone(), HV[:need].detach().clone()))
        if sum(v.shape[0] for v, _ in self.rows) < 2:
            return
        V2, HV2 = torch.cat([v for v, _ in self.rows]), torch.cat([h for _, h in self.rows])
        self.rows = []
        self.asymmetry = checks.check_symmetric(V2, HV2, self.model, self.dtype)
        self.done = True


def clock(device: torch.device) -> float:
    """perf_counter after the device's queued work is done (CUDA: synchronized).

    Args:
        device: the device whose work is waited for.

    Returns:
        Seconds.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
