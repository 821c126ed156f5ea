"""Hook probes during training: a step callback that runs `run_probes` every K-th step and keeps the records.

`ProbeCallback(names, every)` is called as `callback(step, model, (X, y), loss)` after optimizer steps
(`landscape.train.train(step_callbacks=[...])`, or any loop of your own); for the names here
("grad_norm", "stream", "jacobian", "singularity") it measures every `every`-th step, keeps the
records (step, block, metric, value, epoch = step / steps per epoch) in `callback.records`, hands each
step's new records to `on_records`, and appends them to OUT/probes.jsonl when given `out`.
`python -m landscape.train --probes NAMES --probe-every K` builds one of these (landscape.train.callbacks).

- grad_norm / stream / jacobian: one extra forward and backward on the step's batch, with the
  parameters just updated, in the model's training mode and with the training loss (`loss_fn`,
  cross-entropy by default); the backward is `torch.autograd.grad` on the input, so the optimizer's
  `.grad` are untouched.
- singularity: a pass in eval mode over the run's measurement set (`measurement_set`, the fixed samples of
  `landscape.data.measurement_set`, e.g. 10,000 training samples, docs/methods.md §A.2), at most once per
  epoch: at the first probed step of each epoch (every probed step when the callback is not told the
  epoch length).

Every probe pass leaves the run as it found it: the global RNG state (CPU and the model's CUDA
device) is restored, so a run with probes draws the same dropout masks and shuffles as one without,
and buffers written by the pass (BatchNorm running statistics) are put back, as is every module's
train/eval flag. With `out`, records at or after the first probed step are dropped from an existing
probes.jsonl before the callback appends its own (a resumed run writes each step once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.io import append_jsonl
from landscape.modes import preserved_modes
from landscape.probes.blocks import find_blocks
from landscape.probes.records import drop_records_after
from landscape.probes.run import run_probes

TRAIN_PROBES = ("grad_norm", "stream", "jacobian", "singularity")
RECORDS_FILE = "probes.jsonl"
_BLOCK_OPTIONS = ("blocks", "branch", "stream", "units", "weights")


@contextmanager
def side_effect_free(model: nn.Module, train: bool | None = None):
    """A probe pass that leaves no trace: modes (`preserved_modes`), buffers and the global RNG restored.

    Args:
        model: the model the pass runs on.
        train: its mode during the pass (None: as it is).

    Returns:
        A context manager.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({b.device for b in [*model.parameters(), *model.buffers()] if b.device.type == "cuda"},
                     key=str)
    with torch.random.fork_rng(devices=devices), preserved_modes(model, train):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


class ProbeCallback:
    """`callback(step, model, (X, y), loss)`: probe every `every`-th step; records in `.records` and the file.

    Args:
        names: the probes (`TRAIN_PROBES`).
        every: probe every `every`-th optimizer step.
        out: directory of probes.jsonl (None: keep the records in memory only).
        loss_fn: the training loss, loss_fn(output, y) (default cross-entropy).
        measurement_set: inputs of the singularity pass (`landscape.data.measurement_set`); needed for it.
        steps_per_epoch: the epoch length (records get `epoch`; singularity once per epoch).
        batch_size: samples per forward of the singularity pass.
        on_records: called with each step's new records.
        **options: `blocks`, `branch`, `stream`, `units`, `weights` (see `find_blocks`) and the
            `ProbeOptions` fields.
    """

    def __init__(self, names: Sequence[str], every: int = 1, *, out: str | Path | None = None,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, measurement_set: Tensor | None = None,
                 steps_per_epoch: int | None = None, batch_size: int = 1000,
                 on_records: Callable[[list[dict]], None] | None = None, **options):
        names = list(names)
        unknown = [n for n in names if n not in TRAIN_PROBES]
        if unknown or not names:
            raise LandscapeError(f"unknown training probes {unknown or names}; known: {', '.join(TRAIN_PROBES)}")
        if "singularity" in names and measurement_set is None:
            raise LandscapeError("the singularity probe needs the measurement set's inputs (measurement_set=X)")
        if every < 1:
            raise LandscapeError(f"probe interval must be ≥ 1, got {every}")
        self.batch_metrics = [n for n in names if n != "singularity"]
        self.singularity = "singularity" in names
        self.every, self.loss_fn = every, loss_fn or F.cross_entropy
        self.measurement_set, self.batch_size, self.on_records = measurement_set, batch_size, on_records
        self.block_options = {k: options.pop(k) for k in _BLOCK_OPTIONS if k in options}
        self.options = options
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
            o = self.block_options
            self._blocks = find_blocks(model, o.get("blocks"), branch=o.get("branch"),
                                       stream=o.get("stream", "input"), units=o.get("units"),
                                       weights=o.get("weights"))
        new: list[dict] = []
        if self.batch_metrics:
            with side_effect_free(model):
                new += run_probes(model, self.loss_fn, batch, self.batch_metrics, blocks=self._blocks,
                                  step=step, **self.options)
        epoch = (step - 1) // self.steps_per_epoch if self.steps_per_epoch else step  # the epoch `step` is in
        if self.singularity and epoch != self._last_epoch:
            self._last_epoch = epoch
            with side_effect_free(model, train=False):
                new += run_probes(model, None, self.measurement_set, metrics=("singularity",), blocks=self._blocks,
                                  batch_size=self.batch_size, step=step, **self.options)
        if self.steps_per_epoch:
            for r in new:
                r["epoch"] = step / self.steps_per_epoch
        self.records += new
        self._write(step, new)
        if self.on_records is not None:
            self.on_records(new)

    def _write(self, step: int, new: list[dict]) -> None:
        if self.path is None:
            return
        if not self._started:  # a resumed run recomputes everything from this step on
            self._started = True
            drop_records_after(self.path, step - 1)
        append_jsonl(self.path, new)


def make_probe_callback(names: Sequence[str], every: int = 1, **kwargs) -> ProbeCallback:
    """A `ProbeCallback` for `names` run every `every` steps.

    Args:
        names: the probes.
        every: the interval in optimizer steps.
        **kwargs: see `ProbeCallback`.

    Returns:
        The callback.
    """
    return ProbeCallback(names, every, **kwargs)
