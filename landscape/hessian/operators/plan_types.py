"""What an operator's plan records (`Plan`, frozen), what its caller asked (`Request`), and the context every
product runs in (`compute_context`); `landscape.hessian.operators.plan.make_plan` makes the plan.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from landscape.hessian.operators.backends import Sizing
from landscape.objective import math_attention


@dataclass(frozen=True)
class Plan:
    """What the operator decided at construction (immutable; `CurvatureOperator.info()` reports it).

    Attributes:
        backend: "func", "double_backward" or "finite_difference".
        sizing: per-sample state bytes and the budget.
        merge_samples: samples per merged batch (None: batches as given).
        math_attention: products run under the math SDPA kernel (fused attention had no derivative).
        asymmetry: the measured |uᵀHv − vᵀHu| relative to its scale.
        rejected: {backend: why} for an "auto" candidate that failed the symmetry check (or, when "auto" fell
            back to finite differences, could not differentiate the model).
        checks: what was checked at construction, and what was skipped.
        first_pass: the product checks left to the first data pass ("finite", "symmetric") by a budgeted plan.
        choice: what decided the backend (the trial timings per data pass, why func was not timed, or
            "named").
    """

    backend: str
    sizing: Sizing
    merge_samples: int | None = None
    math_attention: bool = False
    asymmetry: float | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    first_pass: tuple[str, ...] = ()
    choice: str = ""
    autocast: torch.dtype | None = None

    def kernel(self, device: torch.device):
        """The context every product runs in: the attention kernel, and the autocast of a mixed-precision
        request (forward and backward compute in that dtype, the parameters and products stay in theirs).

        Args:
            device: the products' device.

        Returns:
            The context manager.
        """
        return compute_context(self.math_attention, self.autocast, device)


def compute_context(math: bool, autocast: torch.dtype | None, device: torch.device) -> ExitStack:
    """math_attention(math), under torch.autocast(device.type, autocast) when autocast is set.

    Args:
        math: run scaled-dot-product attention under the math kernel.
        autocast: the autocast dtype, or None.
        device: the device (its type selects the autocast).

    Returns:
        An ExitStack holding both contexts.
    """
    stack = ExitStack()
    stack.enter_context(math_attention(math))
    if autocast is not None:
        stack.enter_context(torch.autocast(device.type, dtype=autocast))
    return stack


@dataclass(frozen=True)
class Request:
    """What the caller asked of the plan.

    Attributes:
        backends: {name: backend class} the operator offers.
        backend: "auto" or one of them.
        budget: bytes the operator may use.
        check_deterministic: compare two products of the same vectors.
        check_symmetric: check uᵀHv = vᵀHu on trial products (with check_deterministic off and a named
            backend, no trial product is made at all: the "light" plan of the curvature monitor).
        merge: None (when it fits and samples are independent), True or False.
        cache: None (when it fits), True or False; only its False matters to planning.
        seed: for the trial vectors.
        distributed: agree across the ranks of torch.distributed.
        local_samples: samples of this rank's data when known (held batches), else None.
        autocast: compute under torch.autocast in this dtype (None: in the snapshot's dtype); the checks'
            tolerances follow it.
    """

    backends: dict[str, type]
    backend: str
    budget: int
    check_deterministic: bool = True
    check_symmetric: bool = True
    merge: bool | None = None
    cache: bool | None = None
    seed: int = 0
    distributed: bool = False
    local_samples: int | None = None
    autocast: torch.dtype | None = None
