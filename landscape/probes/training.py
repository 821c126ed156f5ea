"""Probes during training: `python -m landscape.train ... --probes grad_norm,stream,singularity --probe-every K`.

`landscape.train` calls each registered probe as `callback(step, model, (X, y), loss)` after every K-th
optimizer step; the names here ("grad_norm", "stream", "jacobian", "singularity") share one callback
that appends records to OUT/probes.jsonl (one JSON line per record: step, block, metric, value,
epoch = step / steps per epoch) and keeps them in `callback.records`.

- grad_norm / stream / jacobian: one extra forward and backward on the step's batch, with the
  parameters just updated, in the model's training mode and with the training loss
  (cross-entropy with the run's label smoothing); the backward is `torch.autograd.grad` on the
  input, so the optimizer's `.grad` are untouched.
- singularity: a pass in eval mode over a fixed probe set (the first 10,000 training samples,
  SPEC A.2 [TD]), at most once per epoch: at the first probed step of each epoch (every probed
  step when the callback is not told the epoch length).

Every probe pass leaves the run as it found it: the global RNG state (CPU and the model's CUDA
device) is restored, so a run with probes draws the same dropout masks and shuffles as one without,
and buffers written by the pass (BatchNorm running statistics) are put back, as is the train/eval
mode. On resume, records at or after the first probed step are dropped from probes.jsonl before the
run appends them again.

From Python, `make_probe_callback(names, every)` gives a callback for `train(step_callbacks=[...])`,
which calls it after every step.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.probes.blocks import find_blocks
from landscape.probes.run import run_probes
from landscape.train import ProbeContext, register_probe

TRAIN_PROBES = ("grad_norm", "stream", "jacobian", "singularity")
RECORDS_FILE = "probes.jsonl"


@contextmanager
def preserved(model: nn.Module, train: bool | None = None):
    """Run a probe pass without side effects on `model` or the global RNG (mode, buffers, RNG restored)."""
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({b.device for b in [*model.parameters(), *model.buffers()] if b.device.type == "cuda"},
                     key=str)
    with torch.random.fork_rng(devices=devices):
        try:
            if train is not None:
                model.train(train)
            yield
        finally:
            model.train(was_training)
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


class ProbeCallback:
    """`callback(step, model, (X, y), loss)`: probe every `every`-th step; records in `.records` and the file."""

    def __init__(self, names: Sequence[str], every: int = 1, *, out: str | Path | None = None,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, probe_set: Tensor | None = None,
                 steps_per_epoch: int | None = None, batch_size: int = 1000, **options):
        names = list(names)
        unknown = [n for n in names if n not in TRAIN_PROBES]
        if unknown or not names:
            raise LandscapeError(f"unknown training probes {unknown or names}; known: {', '.join(TRAIN_PROBES)}")
        if "singularity" in names and probe_set is None:
            raise LandscapeError("the singularity probe needs a probe set (probe_set=X)")
        if every < 1:
            raise LandscapeError(f"probe interval must be ≥ 1, got {every}")
        self.batch_metrics = [n for n in names if n != "singularity"]
        self.singularity = "singularity" in names
        self.every, self.loss_fn = every, loss_fn or F.cross_entropy
        self.probe_set, self.batch_size, self.options = probe_set, batch_size, options
        self.steps_per_epoch = steps_per_epoch
        self.path = Path(out) / RECORDS_FILE if out is not None else None
        self.records: list[dict] = []
        self._blocks = None
        self._last_epoch = -1
        self._started = False

    def __call__(self, step: int, model: nn.Module, batch: tuple[Tensor, Tensor], loss: Tensor) -> None:
        if step % self.every:
            return
        if self._blocks is None:
            self._blocks = find_blocks(model, self.options.get("blocks"), branch=self.options.get("branch"),
                                       stream=self.options.get("stream", "input"),
                                       units=self.options.get("units"), weights=self.options.get("weights"))
        opts = {k: v for k, v in self.options.items() if k not in ("blocks", "branch", "stream", "units",
                                                                  "weights")}
        new: list[dict] = []
        if self.batch_metrics:
            with preserved(model):
                new += run_probes(model, batch, self.loss_fn, self.batch_metrics, blocks=self._blocks,
                                  step=step, **opts)
        epoch = (step - 1) // self.steps_per_epoch if self.steps_per_epoch else step  # the epoch `step` is in
        if self.singularity and epoch != self._last_epoch:
            self._last_epoch = epoch
            with preserved(model, train=False):
                new += run_probes(model, self.probe_set, metrics=("singularity",), blocks=self._blocks,
                                  batch_size=self.batch_size, step=step, **opts)
        if self.steps_per_epoch:
            for r in new:
                r["epoch"] = step / self.steps_per_epoch
        self.records += new
        self._write(step, new)

    def _write(self, step: int, new: list[dict]) -> None:
        if self.path is None:
            return
        if not self._started:  # a resumed run recomputes everything from this step on
            self._started = True
            if self.path.exists():
                kept = [s for s in self.path.read_text().splitlines() if s and json.loads(s)["step"] < step]
                self.path.write_text("".join(s + "\n" for s in kept))
        with self.path.open("a") as fh:
            fh.writelines(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                      for k, v in r.items()}) + "\n" for r in new)


def make_probe_callback(names: Sequence[str], every: int = 1, **kwargs) -> ProbeCallback:
    """A `ProbeCallback` for `names` run every `every` steps; see `ProbeCallback` for the keywords."""
    return ProbeCallback(names, every, **kwargs)


def _from_context(name: str, ctx: ProbeContext):
    """train.py's factory: the first of our names in --probes gets the shared callback, the rest a no-op."""
    ours = [n for n in ctx.config.probes if n in TRAIN_PROBES]
    if name != ours[0]:
        return lambda step, model, batch, loss: None
    data, cfg = ctx.train_data, ctx.config
    return ProbeCallback(ours, 1, out=ctx.out,
                         loss_fn=partial(F.cross_entropy, label_smoothing=cfg.label_smoothing),
                         probe_set=data.X[:10_000] if "singularity" in ours else None,
                         steps_per_epoch=math.ceil(len(data) / cfg.batch_size), batch_size=cfg.eval_batch_size)


def _register() -> None:
    """Register with landscape.train, and with `__main__` too when that is train.py run as
    `python -m landscape.train` (a second copy of the module, with its own registry)."""
    registries = [register_probe]
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "landscape.train":
        registries.append(main.register_probe)
    for register in registries:
        for name in TRAIN_PROBES:
            register(name, partial(_from_context, name))


_register()
