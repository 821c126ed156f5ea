"""Products through torch.compile (`CurvatureOperator(compile=True)`): a backend's per-batch product compiled.

A backend whose class sets `compilable = True` has its `apply(state, tangents)` wrapped in `torch.compile`:
dynamo traces the product (forward-over-reverse: vmap of jvp of grad through `functional_call`; the GGN's
J, output-space Hessian and Jᵀ) into graphs that inductor fuses, compiled on the first call and again for
each new batch shape. The double-backward Hessian's products are backward passes of a graph built in eager
mode (`autograd.grad(create_graph=True)`, kept between calls), which dynamo does not capture, and finite
differences' gradients are two eager passes: both stay eager, with the reason in `info()["compile"]`. A
compile or compiled call that raises falls back to eager for good, its first line kept as the reason.

Compilation costs once per shape (measured on this CPU: 9-118 s at load 15, BENCHMARKS.md); products then
cost 0.3-0.4x eager on small CPU models; a GPU gains more (curvlinops' figures for reference: ResNet-18 HVP
7.87x a gradient eager, 2.25x compiled; nanoGPT-124M 4.53x and 2.90x).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from landscape.errors import first_line


class CompiledBackend:
    """`impl` with its `apply` run through torch.compile (eager after the first failure).

    Args:
        impl: a backend (prepare / state_bytes / apply).
        backend: torch.compile's backend ("inductor"; "aot_eager" traces without generating code).
    """

    def __init__(self, impl: Any, backend: str = "inductor"):
        self.impl = impl
        self.fallback: str | None = None
        self._apply = torch.compile(impl.apply, backend=backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.impl, name)

    def prepare(self, batch: Any) -> Any:
        """The wrapped backend's per-batch state.

        Args:
            batch: the prepared batch.

        Returns:
            The state.
        """
        return self.impl.prepare(batch)

    def state_bytes(self, state: Any, n: int) -> int:
        """The wrapped backend's state size.

        Args:
            state: the state.
            n: its samples.

        Returns:
            Bytes.
        """
        return self.impl.state_bytes(state, n)

    def apply(self, state: Any, tangents: list[Tensor]) -> list[Tensor]:
        """H_b V through the compiled product (the eager one once compiling or a compiled call has failed).

        Args:
            state: the batch's prepared state.
            tangents: [k, *shape] per parameter.

        Returns:
            The product per parameter.
        """
        if self.fallback is None:
            try:
                return self._apply(state, tangents)
            except Exception as e:  # noqa: BLE001 - any compiler failure: record it, run eager
                self.fallback = f"torch.compile failed ({type(e).__name__}: {_cause(e)}); eager"
        return self.impl.apply(state, tangents)


def _cause(e: BaseException) -> str:
    """The error's first line, and the next one when the first only introduces it ("backend=... raised:")."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return first_line(ValueError(f"{lines[0]} {lines[1]}"), limit=200)
    return first_line(e, limit=200)


def compile_backend(impl: Any, backend: str = "inductor") -> tuple[Any, str | None]:
    """The backend products should run through.

    Args:
        impl: the plan's backend.
        backend: torch.compile's backend name.

    Returns:
        (`CompiledBackend(impl, backend)`, None) when `impl`'s class is `compilable`, else (impl, why not).
    """
    if getattr(impl, "compilable", False):
        return CompiledBackend(impl, backend), None
    why = {"DoubleBackwardHessian": "products are backward passes of an eagerly built double-backward graph, "
                                    "which torch.compile does not capture",
           "FiniteDifferenceHessian": "products are two eager gradient passes"}.get(type(impl).__name__,
                                                                                     "not marked compilable")
    return impl, f"{type(impl).__name__}: {why}; eager"


def compile_info(impl: Any, reason: str | None) -> str:
    """What `info()["compile"]` says.

    Args:
        impl: the backend in use.
        reason: why it was not compiled (None when it was, or when compiling was not asked).

    Returns:
        "compiled", the fallback's cause, the reason, or "eager".
    """
    if isinstance(impl, CompiledBackend):
        return impl.fallback or "compiled"
    return reason or "eager"
