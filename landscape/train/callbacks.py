"""The callbacks a training run builds from its config: probes from their names, and the record sinks.

`train()` calls step callbacks as `cb(step, model, (X, y), loss)` after every optimizer step and epoch
callbacks as `cb(epoch, model, record)` after every epoch. This module is where the orchestrator wires
diagnostics into that loop (engines never import training):

- `PROBES` maps each `--probes` name to a factory `factory(ctx) -> callback`; `build_probe_callbacks`
  calls each factory once with a `ProbeContext` (model, optimizer, data, measurement set, loss, output)
  and runs the callbacks every `--probe-every` steps. The hook metrics (grad_norm, stream, jacobian,
  singularity) share one `landscape.probes.ProbeCallback`. A new diagnostic is one entry in `PROBES`.
- A probe hands its records to `ctx.emit(records)`; the `RecordSink` appends them to RUN/probes.jsonl
  (the source of truth) and, with `--tensorboard DIR`, mirrors them and the per-epoch training metrics
  as TensorBoard scalars. On resume, records after the checkpoint's step are dropped from probes.jsonl
  first, so a resumed run writes each step's records once.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.data import TensorData, measurement_set, measurement_set_record
from landscape.errors import LandscapeError
from landscape.io import append_jsonl
from landscape.probes.records import drop_records_after
from landscape.train.config import TrainConfig

StepCallback = Callable[[int, nn.Module, tuple[Tensor, Tensor], Tensor], None]
EpochCallback = Callable[[int, nn.Module, dict], None]
RECORDS_FILE = "probes.jsonl"
DEFAULT_MEASURE_SAMPLES = {"singularity": 10_000,   # the measurement set of the singularity probe (§A.2)
                           "curvature": 1_000}      # ... and of the curvature monitor (one kept graph holds it)


@dataclass
class ProbeContext:
    """What a probe factory may use to set itself up."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_data: TensorData
    test_data: TensorData
    config: TrainConfig
    out: Path | None
    steps_per_epoch: int
    emit: Callable[[list[dict]], None] = lambda records: None
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy

    def measurement_set(self, probe: str) -> tuple[Tensor, Tensor]:
        """The run's measurement set (`landscape.data.measurement_set`) for one probe.

        Args:
            probe: "singularity" or "curvature" (its default size when --measure-samples is unset).

        Returns:
            (X, y) of the `--measure-samples` (or the default) training samples.
        """
        return measurement_set(self.train_data, self.config.measure_samples or DEFAULT_MEASURE_SAMPLES[probe])


def measurement_sets(cfg: TrainConfig, n_train: int) -> dict:
    """What config.json records of the measurement sets the run's probes use (docs/formats.md).

    Args:
        cfg: the run's configuration.
        n_train: the training samples the sets are drawn from.

    Returns:
        {probe: `measurement_set_record`} for each of --probes that uses one.
    """
    return {p: measurement_set_record(cfg.measure_samples or DEFAULT_MEASURE_SAMPLES[p], n_train)
            for p in DEFAULT_MEASURE_SAMPLES if p in cfg.probes}


def _hook_probes(ctx: ProbeContext):
    """One `ProbeCallback` for all the hook metrics named in --probes (they share the forward and backward)."""
    from landscape.probes.training import TRAIN_PROBES, ProbeCallback

    names = [n for n in ctx.config.probes if n in TRAIN_PROBES]
    return ProbeCallback(names, 1, loss_fn=ctx.loss_fn,
                         measurement_set=ctx.measurement_set("singularity")[0] if "singularity" in names else None,
                         steps_per_epoch=ctx.steps_per_epoch, batch_size=ctx.config.eval_batch_size,
                         on_records=ctx.emit)


def _curvature(ctx: ProbeContext):
    """The curvature monitor (landscape.hessian.monitor, docs/methods.md §G) on the measurement set, with the
    run's optimizer (eos_ratio, Adam's preconditioner) and its own generator seeded from the run's seed."""
    try:
        from landscape.hessian.monitor import CURVATURE_METRICS, CurvatureMonitor, MonitorOptions
    except ImportError as e:
        raise LandscapeError(f"--probes curvature: the curvature monitor is not available ({e})") from None
    # every metric of docs/formats.md; trace and negative_ratio (tens of products each) at every 10th measurement
    options = MonitorOptions(metrics=CURVATURE_METRICS, full_every=10, seed=ctx.config.seed,
                             batch_size=ctx.config.eval_batch_size)
    return CurvatureMonitor(ctx.loss_fn, ctx.measurement_set("curvature"), optimizer=ctx.optimizer, options=options,
                            on_records=ctx.emit)


PROBES: dict[str, Callable[[ProbeContext], StepCallback]] = {
    "grad_norm": _hook_probes, "stream": _hook_probes, "jacobian": _hook_probes, "singularity": _hook_probes,
    "curvature": _curvature,
}


def check_probe_names(names: Sequence[str]) -> None:
    """Refuse names that are not `--probes` entries.

    Args:
        names: the requested probes.

    Raises:
        LandscapeError: an unknown name.
    """
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise LandscapeError(f"unknown probe(s) {unknown}; known: {', '.join(sorted(PROBES))}")


class Every:
    """Calls `callback` after every `k`-th optimizer step; `close()` is passed on."""

    def __init__(self, callback: StepCallback, k: int):
        self.callback, self.k = callback, k

    def __call__(self, step: int, model: nn.Module, batch, loss: Tensor) -> None:
        if step % self.k == 0:
            self.callback(step, model, batch, loss)

    def close(self) -> None:
        """Close the wrapped callback (when it has a close method)."""
        close = getattr(self.callback, "close", None)
        if callable(close):
            close()


def build_probe_callbacks(ctx: ProbeContext) -> list[StepCallback]:
    """The callbacks of `--probes` (each factory called once, in order of first mention), every K steps.

    Args:
        ctx: the run's probe context.

    Returns:
        The step callbacks.
    """
    names = ctx.config.probes
    check_probe_names(names)
    factories = dict.fromkeys(PROBES[n] for n in names)
    return [Every(factory(ctx), ctx.config.probe_every) for factory in factories]


def check_tensorboard() -> None:
    """--tensorboard needs the optional `tensorboard` package (checked before any compute)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise LandscapeError("--tensorboard needs the tensorboard package: "
                             "pip install 'landscape-diagnostics[tensorboard]'")


@dataclass
class RecordSink:
    """Where a run's records go: probes.jsonl (source of truth) and, optionally, TensorBoard scalars."""

    out: Path | None
    tensorboard: str | None
    start_step: int = 0
    steps_per_epoch: int | None = None
    _writer: object = field(default=None, repr=False)

    def open(self) -> RecordSink:
        """Drop records after `start_step` from an existing probes.jsonl; open the TensorBoard writer."""
        if self.path is not None:
            drop_records_after(self.path, self.start_step)
        if self.tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise LandscapeError(f"--tensorboard: cannot import torch.utils.tensorboard ({e})") from None
            # purge_step: events a killed run wrote after its checkpoint are hidden on resume
            self._writer = SummaryWriter(self.tensorboard, purge_step=self.start_step or None)
        return self

    @property
    def path(self) -> Path | None:
        """OUT/probes.jsonl, or None without an output directory."""
        return None if self.out is None else self.out / RECORDS_FILE

    def emit(self, records: list[dict]) -> None:
        """Append probe records (`{"step", "block", "metric", "value", ...}`; `epoch` = step / steps per epoch
        is added where missing).

        Args:
            records: the records.
        """
        if not records:
            return
        if self.steps_per_epoch:
            for r in records:
                if "epoch" not in r and isinstance(r.get("step"), int):
                    r["epoch"] = r["step"] / self.steps_per_epoch
        if self.path is not None:
            append_jsonl(self.path, records)
        if self._writer is not None:
            for r in records:
                tag = "probes/" + r["metric"] + ("" if r.get("block") is None else "/" + str(r["block"]))
                tag += "" if r.get("index") is None else f"/{r['index']}"   # top_eigenvalues: one tag per λ_i
                self._scalars(tag.replace(":", "/"), r.get("value"), r.get("step"))

    def epoch(self, epoch: int, model: nn.Module, record: dict) -> None:
        """An epoch callback: the epoch's training metrics (metrics.jsonl's record) as scalars.

        Args:
            epoch: the epoch.
            model: the model (unused).
            record: the epoch's metrics.
        """
        if self._writer is not None:
            for key, value in record.items():
                if key != "step":
                    self._scalars(f"train/{key}", value, record["step"])
            self._writer.flush()

    def _scalars(self, tag: str, value, step: int | None) -> None:
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self._scalars(f"{tag}/{i}", v, step)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Close the TensorBoard writer, if one is open."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

