"""The training loop: `train(config, step_callbacks=..., epoch_callbacks=...)` and `evaluate`.

Writes RUN/config.json (resolved config, git commit, versions), RUN/metrics.jsonl (one JSON line per
epoch: train loss/acc as running means over the epoch, test loss/acc, lr, seconds) and RUN/checkpoint.pt
after every epoch (atomic; `landscape.load_checkpoint` rebuilds the model from it); with keep_epochs
also RUN/epochs/epoch_NNNN.pt, epoch 0 being the initial weights. The schedule is in
`landscape.train.optim`, checkpoint and resume in `landscape.train.state`, the probe and TensorBoard
callbacks in `landscape.train.callbacks`.

Interrupts: with handle_signals, SIGINT/SIGTERM stop the run at the next step boundary; the checkpoint
of the last complete epoch stays. A non-finite loss raises `NonFiniteLoss` and leaves the last good
checkpoint untouched.

With --fsdp the model is sharded by FSDP2 instead (`landscape.train.fsdp`: full states in the checkpoints).
Several processes (DistributedDataParallel; gloo on CPU, NCCL on CUDA with one GPU per LOCAL_RANK):
every rank holds the data set and draws the same shuffle; rank r takes the r-th contiguous slice of each
global batch of B samples (sizes n_r differ by at most one) and weights its mean loss by n_r·W/B, so
DDP's average of the W gradients is the global-batch mean (1/B) Σ_i ∇ℓ_i: the run follows the
single-process trajectory up to float rounding. Each rank needs ≥ 1 sample of every batch (B ≥ W and
the last batch ≥ W). Rank 0 writes the files, runs probes and shows progress; metrics are summed over
ranks; a signal to any rank stops all after the same step (one all_reduce per step). A checkpoint holds
the unwrapped model and the shared RNG states, so a resume works with any number of ranks. BatchNorm
becomes SyncBatchNorm on CUDA; under gloo it keeps per-rank statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from landscape import distributed
from landscape.cli import check_writable, interrupts, progress
from landscape.data import TensorData, shard
from landscape.errors import LandscapeError
from landscape.io import append_jsonl, write_json, write_jsonl
from landscape.modes import preserved_modes
from landscape.train import fsdp
from landscape.train.callbacks import (
    EpochCallback,
    ProbeContext,
    RecordSink,
    StepCallback,
    build_probe_callbacks,
    check_probe_names,
    check_tensorboard,
)
from landscape.train.config import TrainConfig
from landscape.train.losses import Loss, evaluation_loss, loss_spec, training_loss
from landscape.train.optim import make_optimizer, set_lr
from landscape.train.setup import autocast, prepare, run_record
from landscape.train.state import TrainingState, epoch_path, keep_copy, save_state


class NonFiniteLoss(LandscapeError):
    """The training loss became NaN or infinite."""


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorData, batch_size: int = 1024, bf16: bool = False, *, sharded: bool = False,
    loss_fn: Loss = F.cross_entropy, in_step: bool = False,
) -> tuple[float, float]:
    """(mean loss, accuracy) over `data` in eval mode; the model's modes are restored.

    Args:
        model: the classifier (outputs [B, C]).
        data: the split to evaluate.
        batch_size: samples per forward.
        bf16: bfloat16 autocast (CUDA).
        sharded: under torch.distributed each rank evaluates its share (`landscape.data.shard`) and the sums
            are all-reduced, so every rank gets the full-data numbers; a collective: every rank must call it.
        loss_fn: a batch-mean loss `loss_fn(output, y)` (default cross-entropy; a run passes its
            `evaluation_loss`).
        in_step: every forward is a collective (FSDP): all ranks run as many forwards as the one with the most
            batches, the others on an empty batch.

    Returns:
        ((1/N) Σ_b n_b·loss_fn(batch b), fraction of argmax outputs equal to the label).
    """
    sums = torch.zeros(2, dtype=torch.float64, device=data.device)    # Σ loss, Σ correct
    batches = list((shard(data) if sharded else data).batches(batch_size))
    if in_step:
        most = distributed.all_reduce_max(torch.tensor([len(batches)], dtype=torch.int64))
        batches += [(batches[0][0][:0], batches[0][1][:0])] * (int(most[0]) - len(batches))
    with preserved_modes(model, train=False):
        for X, y in batches:
            with autocast(bf16):
                logits = model(X)
            if not len(y):                                          # a padding forward (in_step)
                continue
            sums[0] += loss_fn(logits.float(), y).double() * len(y)
            sums[1] += (logits.argmax(1) == y).sum()
    if sharded:
        distributed.all_reduce_sum(sums)
    return sums[0].item() / len(data), sums[1].item() / len(data)


@dataclass
class _Loop:
    """One rank's view of a running training: the run's state plus what the steps need."""

    cfg: TrainConfig
    state: TrainingState
    net: nn.Module                      # the model, or its DistributedDataParallel wrapper
    penalty: Callable[[], Tensor] | None
    loss_fn: Loss
    eval_loss: Loss
    device: torch.device
    out: Path | None
    ckpt: Path | None
    last_saved: int | None

    @property
    def rank(self) -> int:
        return distributed.rank()

    @property
    def world(self) -> int:
        return self.state.world_size


def train(config: TrainConfig | dict, *, loss_fn: Loss | None = None, step_callbacks: Sequence[StepCallback] = (),
          epoch_callbacks: Sequence[EpochCallback] = (), handle_signals: bool = False) -> dict:
    """Train per `config`; with `config.out` set, checkpoint every epoch and resume with `config.resume`.

    The loss descended is the run's `--loss` (`landscape.train.losses.training_loss`); the test loss of each
    epoch is the same loss without label smoothing.

    Args:
        config: a `TrainConfig` or its dict.
        loss_fn: the loss to descend, given as a function instead of `config.loss`; it must be importable
            (`landscape.train.losses.loss_spec`), and its spec is what the run records as `loss`.
        step_callbacks: called as `cb(step, model, (X, y), loss)` after every optimizer step (step counts from
            1), before the probes of `config.probes`.
        epoch_callbacks: called as `cb(epoch, model, record)` after every epoch (epoch counts from 1), once the
            epoch's checkpoint is written; `record` is the epoch's metrics.jsonl line.
        handle_signals: catch SIGINT/SIGTERM (main thread only) and stop cleanly at the next step boundary;
            a second signal stops at once (`landscape.cli.Interrupted`).

    Returns:
        {"status": "completed" | "interrupted", "signal", "model", "history", "final", "epoch", "step", "out",
        "checkpoint", "config", "world_size"}; a non-finite loss raises `NonFiniteLoss`.

    Under torchrun (W ranks, see the module docstring) every rank calls this with the same config: rank r
    trains on its slice of each global batch, callbacks see that slice, rank 0 alone writes files, runs
    probes and shows progress, and every rank returns the same global history.
    """
    loop = _start(config, loss_fn)
    state, cfg = loop.state, loop.cfg
    steps_per_epoch = math.ceil(len(state.train_data) / cfg.batch_size)
    owned: list = []                                   # what train builds (and closes): sink and probes
    bar = progress(total=cfg.epochs * steps_per_epoch, initial=state.step, enabled=cfg.progress, unit="step")
    status, stop = "completed", None
    try:
        callbacks, epoch_cbs = _open_outputs(loop, list(step_callbacks), list(epoch_callbacks), owned)
        signals = interrupts("flag") if handle_signals else contextlib.nullcontext(SimpleNamespace(received=None))
        with signals as received:
            while state.epoch < cfg.epochs and stop is None:
                t0 = time.perf_counter()
                stop, sums, lr = _train_epoch(loop, callbacks, received, bar)
                if stop is None:
                    record = _end_epoch(loop, sums, lr, t0)
                    for cb in epoch_cbs:
                        cb(state.epoch, state.model, record)
            if stop is not None:
                status = "interrupted"
    finally:
        bar.close()
        for thing in reversed(owned):
            close = getattr(thing, "close", None)
            if callable(close):
                close()
    ckpt = loop.ckpt
    return {"status": status, "signal": stop, "model": state.model, "history": state.history,
            "final": state.history[-1] if state.history else None, "epoch": state.epoch, "step": state.step,
            "out": None if loop.out is None else str(loop.out),
            "checkpoint": None if ckpt is None or loop.last_saved is None else str(ckpt),
            "config": cfg.to_dict(), "world_size": loop.world}


def _start(config: TrainConfig | dict, loss_fn: Loss | None = None) -> _Loop:
    """Validate the config (with `loss_fn`'s spec as its loss), set up the device and threads, and `prepare` the
    run (rank 0 first)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    if loss_fn is not None:
        cfg = dataclasses.replace(cfg, loss=loss_spec(loss_fn))
    cfg.validate()
    device = distributed.setup(cfg.device)
    world = distributed.world_size()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.bf16 and device.type != "cuda":
        raise LandscapeError(f"--bf16 needs a CUDA device, but training runs on {device}")
    out = Path(cfg.out) if cfg.out else None
    ckpt = out / "checkpoint.pt" if out else None

    def checks() -> None:
        if cfg.fsdp:
            fsdp.check_options(cfg)
        check_probe_names(cfg.probes)
        if cfg.tensorboard is not None:
            check_tensorboard()
            check_writable(Path(cfg.tensorboard), "--tensorboard")
        if cfg.keep_epochs and out is None:
            raise LandscapeError("--keep-epochs needs --out (the epochs are kept in OUT/epochs)")

    setup = distributed.main_first(lambda: prepare(cfg, device, out, ckpt, world, checks))
    model = setup.state.model
    if cfg.fsdp:
        setup.state.optimizer = fsdp.shard(model, setup.state.optimizer, lambda m: make_optimizer(m, cfg))
    net = model if world == 1 or cfg.fsdp else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Loop(cfg, setup.state, net, setup.penalty, training_loss(cfg), evaluation_loss(cfg), device, out,
                 ckpt, setup.state.epoch if setup.resumed else None)


def _open_outputs(loop: _Loop, callbacks: list, epoch_cbs: list, owned: list) -> tuple[list, list]:
    """Rank 0: the record sink, the probes of --probes, config.json, metrics.jsonl and the initial weights;
    a failure on rank 0 is raised on every rank. Returns the step and epoch callbacks to run."""
    state, cfg, out = loop.state, loop.cfg, loop.out
    steps_per_epoch = math.ceil(len(state.train_data) / cfg.batch_size)
    error = None
    if loop.rank == 0:
        try:
            sink = RecordSink(out, cfg.tensorboard, start_step=state.step, steps_per_epoch=steps_per_epoch).open()
            owned.append(sink)
            ctx = ProbeContext(state.model, state.optimizer, state.train_data, state.test_data, cfg, out,
                               steps_per_epoch, emit=sink.emit, loss_fn=loop.loss_fn)
            probes = build_probe_callbacks(ctx)
            owned += probes
            callbacks += probes
            epoch_cbs.insert(0, sink.epoch)
            if out is not None:
                write_json(out / "config.json", run_record(cfg, state.model, state.train_data, state.test_data,
                                                           loop.device, loop.world), indent=2)
                write_jsonl(out / "metrics.jsonl", state.history)
                if cfg.keep_epochs and state.epoch == 0 and not epoch_path(out, 0).exists():
                    save_state(epoch_path(out, 0), state)          # the initial weights
        except OSError as e:
            error = LandscapeError(f"cannot write to --out {out}: {e.strerror or e}")
        except LandscapeError as e:
            error = e
    distributed.agree(error)
    return callbacks, epoch_cbs


def _train_epoch(loop: _Loop, callbacks: list, received, bar) -> tuple[int | None, list, float]:
    """One epoch of optimizer steps (or fewer, when a signal arrives). Returns (the agreed signal or None,
    [Σ loss·n, Σ correct, n] of this rank, the last learning rate)."""
    state, cfg = loop.state, loop.cfg
    n, B = len(state.train_data), cfg.batch_size
    steps_per_epoch = math.ceil(n / B)
    sums = [torch.zeros((), dtype=torch.float64, device=loop.device),
            torch.zeros((), dtype=torch.int64, device=loop.device), 0]
    done, lr, stop = 0, cfg.lr, None                                   # done: samples of all ranks
    bar.set_description(f"epoch {state.epoch + 1}/{cfg.epochs}")
    for X, y in state.train_data.batches(B, shuffle=True, generator=state.shuffle_gen, augment=cfg.augment,
                                         part=(loop.rank, loop.world)):
        size = min(B, n - done)                                        # the global batch this slice belongs to
        lr = set_lr(state.optimizer, state.step, steps_per_epoch, cfg)
        loss, logits = _step(loop, X, y, size)
        done += size
        sums[0] += loss.double() * len(y)
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
        for cb in callbacks:
            cb(state.step, state.model, (X, y), loss)
        bar.update(1)
        stop = _agreed_stop(received.received, loop.world)
        if state.step % 25 == 0 or done == n:
            total_loss, total_correct, total_seen = _totals(*sums, loop.world)
            _check_finite(total_loss / total_seen, loop, state.epoch, state.step)
            bar.set_postfix(loss=f"{total_loss / total_seen:.4f}", acc=f"{total_correct / total_seen:.3f}")
        if stop is not None:
            break
    return stop, sums, lr


def _step(loop: _Loop, X: Tensor, y: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """One optimizer step on this rank's slice (X, y) of a global batch of `size` samples; returns the
    slice's (detached) mean loss and outputs."""
    state, cfg = loop.state, loop.cfg
    with autocast(cfg.bf16):
        logits = loop.net(X)
        loss = loop.loss_fn(logits.float(), y)
    # DDP averages the W ranks' gradients; weighting rank r's mean by n_r·W/size makes that average the
    # global batch mean (1/size) Σ_i ∇ℓ_i exactly, also for unequal slices
    weight = len(y) * loop.world / size
    objective = loss if weight == 1 else loss * weight
    if loop.penalty is not None:
        objective = objective + loop.penalty()
    state.optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if cfg.clip_grad is not None:
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
    state.optimizer.step()
    if state.procrustes is not None:
        state.procrustes.step()
    state.step += 1
    return loss.detach(), logits.detach()


def _end_epoch(loop: _Loop, sums: list, lr: float, t0: float) -> dict:
    """Close an epoch: global training metrics, the test evaluation, the history record, the checkpoint
    (rank 0; a write failure is raised on every rank). Returns the record."""
    state, cfg, out, ckpt = loop.state, loop.cfg, loop.out, loop.ckpt
    total_loss, total_correct, total_seen = _totals(*sums, loop.world)
    train_loss = total_loss / total_seen
    _check_finite(train_loss, loop, state.epoch, state.step)
    distributed.broadcast_buffers(state.model)                     # rank 0's BatchNorm statistics everywhere
    test_loss, test_acc = evaluate(state.model, state.test_data, cfg.eval_batch_size, cfg.bf16,
                                   sharded=loop.world > 1, loss_fn=loop.eval_loss, in_step=cfg.fsdp)
    state.epoch += 1
    record = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss,
              "train_acc": total_correct / total_seen, "test_loss": test_loss, "test_acc": test_acc,
              "lr": lr, "seconds": time.perf_counter() - t0}
    state.history.append(record)
    if out is not None:
        error = None
        held = state                                          # a sharded run saves the gathered full states
        gathered = fsdp.gather(state.model, state.optimizer) if cfg.fsdp else None   # every rank takes part
        if gathered is not None:
            held = dataclasses.replace(state, model=gathered[0], optimizer=gathered[1])
        if loop.rank == 0:
            try:
                save_state(ckpt, held)
                if cfg.keep_epochs:
                    keep_copy(ckpt, out, state.epoch)
                append_jsonl(out / "metrics.jsonl", [record])
            except OSError as e:
                kept = f"{ckpt} still holds epoch {loop.last_saved}" if loop.last_saved else "nothing was saved"
                error = LandscapeError(f"cannot write {ckpt}: {e.strerror or e}; {kept}")
        distributed.agree(error)
        loop.last_saved = state.epoch
    return record


def _totals(loss_sum: Tensor, correct: Tensor, seen: int, world: int) -> tuple[float, int, int]:
    """Σ loss·n, Σ correct, Σ n over all ranks (one all_reduce; local values in a single process)."""
    if world == 1:
        return loss_sum.item(), int(correct.item()), seen
    t = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                               device=loss_sum.device)])
    distributed.all_reduce_sum(t)
    return t[0].item(), int(t[1].item()), int(t[2].item())


def _agreed_stop(received: int | None, world: int) -> int | None:
    """The largest signal any rank received (one all_reduce), so all ranks stop after the same step."""
    if world == 1:
        return received
    flag = distributed.all_reduce_max(torch.tensor([received or 0], dtype=torch.int64))
    return int(flag.item()) or None


def _check_finite(value: float, loop: _Loop, epoch: int, step: int) -> None:
    """Raise `NonFiniteLoss` (saying which checkpoint still holds good weights) when `value` is not finite."""
    if math.isfinite(value):
        return
    ckpt, last_saved = loop.ckpt, loop.last_saved
    if ckpt is None:
        kept = "nothing was saved (no --out)"
    elif last_saved is None:
        kept = f"no checkpoint was written to {ckpt.parent}"
    else:
        kept = f"{ckpt} still holds epoch {last_saved}"
    raise NonFiniteLoss(f"training loss became {value} in epoch {epoch + 1} (by step {step}); stopped, "
                        f"{kept}; lower --lr, add --clip-grad or warm up")
