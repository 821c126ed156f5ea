"""What the framework callbacks share: a CurvatureMonitor measured at a step, its records as flat log values.

    log = CurvatureLog(data, loss_fn=None, every=50)      # loss_fn=None: the model's own loss (HF models)
    if log.due(step):
        values = log.measure(model, step, optimizer)      # {"curvature/lambda_max": ..., "curvature/eos_ratio": ...}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian import CurvatureMonitor, MonitorOptions
from landscape.objective import math_attention

LOGGED = ("lambda_max", "eos_ratio", "preconditioned_lambda_max")
LOGGED_OPTIONS = MonitorOptions(metrics=LOGGED)
"""The framework callbacks' default: the monitor's defaults, logging `LOGGED`."""
PREFIX = "curvature/"


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside a framework's wrapper (accelerate's `.optimizer`, Lightning's `._optimizer`).

    Args:
        optimizer: an optimizer or a wrapper of one.

    Returns:
        The innermost torch optimizer (or what was given).
    """
    seen = 0
    while optimizer is not None and seen < 4:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


class CurvatureLog:
    """A `CurvatureMonitor` on a measurement set, measured when a callback says so.

    Args:
        data: the measurement set, any form `landscape.objective.Batches` accepts (token dicts included).
        loss_fn: `loss_fn(outputs, targets)` (batch mean); None: the model's own loss (HF models).
        every: measure at optimizer steps divisible by `every`.
        prefix: prepended to every logged name.
        on_values: called with each measurement's {name: value} (e.g. to write them elsewhere).
        options: the monitor's `MonitorOptions` (k, metrics, tol, ...; default `LOGGED_OPTIONS`: λmax, eos_ratio
            and the preconditioned λmax; eos_ratio needs SGD or Adam/AdamW with one step size, the
            preconditioned one Adam/AdamW).
    `history` holds one {"step": s, name: value, ...} per measurement.
    """

    def __init__(self, data: Any, loss_fn: Callable | None = None, *, every: int = 50,
                 prefix: str = PREFIX, on_values: Callable[[dict], None] | None = None,
                 options: MonitorOptions = LOGGED_OPTIONS):
        if not isinstance(every, int) or every < 1:
            raise LandscapeError(f"every must be a positive integer, got {every!r}")
        self.monitor = CurvatureMonitor(loss_fn, data, every=every, options=options)
        self.every, self.prefix, self.on_values = every, prefix, on_values
        self.history: list[dict] = []
        self._last: int | None = None

    def due(self, step: int) -> bool:
        """A measurement is due at optimizer step `step` (> 0, divisible by `every`, not yet measured).

        Args:
            step: the optimizer step.

        Returns:
            True when a measurement is due.
        """
        return step > 0 and step % self.every == 0 and step != self._last

    def measure(self, model: nn.Module, step: int, optimizer: Any = None) -> dict[str, float]:
        """Measure at the model's current parameters; returns {prefix + metric[_index]: value}.

        The products run under the math attention kernel (fused SDPA kernels have no double backward; the
        monitor's operator only falls back to it when its first-measurement checks run), training keeps its own.

        Args:
            model: the trained model.
            step: the optimizer step.
            optimizer: the training optimizer (or a framework's wrapper).

        Returns:
            The values.
        """
        self.monitor.optimizer = unwrap_optimizer(optimizer)
        with math_attention():
            records = self.monitor.measure(model, step)
        values = {}
        for r in records:
            name = r["metric"] + (f"_{r['index']}" if "index" in r else "")
            values[self.prefix + name] = float(r["value"])
        self._last = step
        self.history.append({"step": step, **values})
        if self.on_values is not None:
            self.on_values(values)
        return values
