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
import math
import time
from collections.abc import Sequence
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
    probe_loss,
)
from landscape.train.config import TrainConfig
from landscape.train.optim import make_optimizer, set_lr
from landscape.train.setup import autocast, prepare, run_record
from landscape.train.state import epoch_path, keep_copy, save_state


class NonFiniteLoss(LandscapeError):
    """The training loss became NaN or infinite."""


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorData, batch_size: int = 1024, bf16: bool = False, *, sharded: bool = False,
    in_step: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over `data` in eval mode; the model's modes are restored.

    sharded: under torch.distributed each rank evaluates its share (`landscape.data.shard`) and the sums are
    all-reduced, so every rank gets the full-data numbers; a collective: every rank must call it.
    in_step: every forward is a collective (FSDP): all ranks run as many forwards as the one with the most
    batches, the others on an empty batch.
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
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
            sums[1] += (logits.argmax(1) == y).sum()
    if sharded:
        distributed.all_reduce_sum(sums)
    return sums[0].item() / len(data), sums[1].item() / len(data)


def train(config: TrainConfig | dict, *, step_callbacks: Sequence[StepCallback] = (),
          epoch_callbacks: Sequence[EpochCallback] = (), handle_signals: bool = False) -> dict:
    """Train per `config`; with `config.out` set, checkpoint every epoch and resume with `config.resume`.

    step_callbacks: called as `cb(step, model, (X, y), loss)` after every optimizer step (step counts from 1),
        before the probes of `config.probes`.
    epoch_callbacks: called as `cb(epoch, model, record)` after every epoch (epoch counts from 1), once the
        epoch's checkpoint is written; `record` is the epoch's metrics.jsonl line.
    handle_signals: catch SIGINT/SIGTERM (main thread only) and stop cleanly at the next step boundary;
        a second signal stops at once (`landscape.cli.Interrupted`).
    Returns {"status": "completed" | "interrupted", "signal", "model", "history", "final", "epoch", "step",
    "out", "checkpoint", "config", "world_size"}; a non-finite loss raises `NonFiniteLoss`.

    Under torchrun (W ranks, see the module docstring) every rank calls this with the same config: rank r
    trains on its slice of each global batch, callbacks see that slice, rank 0 alone writes files, runs
    probes and shows progress, and every rank returns the same global history.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    device = distributed.setup(cfg.device)
    rank, world = distributed.rank(), distributed.world_size()
    main_rank = rank == 0
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

    run = distributed.main_first(lambda: prepare(cfg, device, out, ckpt, world, checks))
    model, optimizer, shuffle_gen, procrustes, penalty = (run.model, run.optimizer, run.shuffle_gen,
                                                          run.procrustes, run.penalty)
    train_data, test_data = run.train_data, run.test_data
    history, epoch, step = run.history, run.epoch, run.step
    if cfg.fsdp:
        optimizer = fsdp.shard(model, optimizer, lambda m: make_optimizer(m, cfg))
    net = model if world == 1 or cfg.fsdp else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

    n, B = len(train_data), cfg.batch_size
    steps_per_epoch = math.ceil(n / B)
    last_saved = epoch if run.resumed else None
    owned: list = []                                   # what train builds (and closes): sink and probes
    bar = progress(total=cfg.epochs * steps_per_epoch, initial=step, enabled=cfg.progress, unit="step")
    status, stop = "completed", None

    def save(epoch: int, states: tuple | None = None) -> None:
        held, opt = states or (model, optimizer)         # a sharded run's gathered full states
        if epoch == 0:                                   # the initial weights: kept, not a checkpoint to resume
            save_state(epoch_path(out, 0), held, opt, shuffle_gen, procrustes, cfg, train_data, test_data,
                       0, step, history, world)
            return
        save_state(ckpt, held, opt, shuffle_gen, procrustes, cfg, train_data, test_data, epoch, step,
                   history, world)
        if cfg.keep_epochs:
            keep_copy(ckpt, out, epoch)

    def totals(loss_sum: Tensor, correct: Tensor, seen: int) -> tuple[float, int, int]:
        """Σ loss·n, Σ correct, Σ n over all ranks (one all_reduce; local values in a single process)."""
        if world == 1:
            return loss_sum.item(), int(correct.item()), seen
        t = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                   device=loss_sum.device)])
        distributed.all_reduce_sum(t)
        return t[0].item(), int(t[1].item()), int(t[2].item())

    def agreed_stop(received: int | None) -> int | None:
        """The largest signal any rank received (one all_reduce), so all ranks stop after the same step."""
        if world == 1:
            return received
        flag = distributed.all_reduce_max(torch.tensor([received or 0], dtype=torch.int64))
        return int(flag.item()) or None

    model.train()
    callbacks, epoch_cbs = list(step_callbacks), list(epoch_callbacks)
    try:
        error = None
        if main_rank:
            try:
                sink = RecordSink(out, cfg.tensorboard, start_step=step, steps_per_epoch=steps_per_epoch).open()
                owned.append(sink)
                ctx = ProbeContext(model, optimizer, train_data, test_data, cfg, out, steps_per_epoch,
                                   emit=sink.emit, loss_fn=probe_loss(cfg))
                probes = build_probe_callbacks(ctx)
                owned += probes
                callbacks += probes
                epoch_cbs.insert(0, sink.epoch)
                if out is not None:
                    write_json(out / "config.json", run_record(cfg, model, train_data, test_data, device, world),
                               indent=2)
                    write_jsonl(out / "metrics.jsonl", history)
                    if cfg.keep_epochs and epoch == 0 and not epoch_path(out, 0).exists():
                        save(0)                          # the initial weights
            except OSError as e:
                error = LandscapeError(f"cannot write to --out {out}: {e.strerror or e}")
            except LandscapeError as e:
                error = e
        distributed.agree(error)
        signals = interrupts("flag") if handle_signals else contextlib.nullcontext(SimpleNamespace(received=None))
        with signals as received:
            while epoch < cfg.epochs and stop is None:
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.int64, device=device)
                seen = done = 0                                  # samples of this rank / of all ranks
                lr = cfg.lr
                bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
                for X, y in train_data.batches(B, shuffle=True, generator=shuffle_gen, augment=cfg.augment,
                                               part=(rank, world)):
                    size = min(B, n - done)                      # the global batch this slice belongs to
                    lr = set_lr(optimizer, step, steps_per_epoch, cfg)
                    with autocast(cfg.bf16):
                        logits = net(X)
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                    # DDP averages the W ranks' gradients; weighting rank r's mean by n_r·W/size makes that
                    # average the global batch mean (1/size) Σ_i ∇ℓ_i exactly, also for unequal slices
                    weight = len(y) * world / size
                    objective = loss if weight == 1 else loss * weight
                    if penalty is not None:
                        objective = objective + penalty()
                    optimizer.zero_grad(set_to_none=True)
                    objective.backward()
                    if cfg.clip_grad is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                    if procrustes is not None:
                        procrustes.step()
                    step += 1
                    done += size
                    loss_sum += loss.detach().double() * len(y)
                    correct += (logits.detach().argmax(1) == y).sum()
                    seen += len(y)
                    batch = (X, y)
                    for cb in callbacks:
                        cb(step, model, batch, loss.detach())
                    bar.update(1)
                    stop = agreed_stop(received.received)
                    if step % 25 == 0 or done == n:
                        total_loss, total_correct, total_seen = totals(loss_sum, correct, seen)
                        running = total_loss / total_seen
                        _check_finite(running, epoch, step, ckpt, last_saved)
                        bar.set_postfix(loss=f"{running:.4f}", acc=f"{total_correct / total_seen:.3f}")
                    if stop is not None:
                        break
                if stop is not None:
                    break
                total_loss, total_correct, total_seen = totals(loss_sum, correct, seen)
                train_loss = total_loss / total_seen
                _check_finite(train_loss, epoch, step, ckpt, last_saved)
                distributed.broadcast_buffers(model)             # rank 0's BatchNorm statistics everywhere
                test_loss, test_acc = evaluate(model, test_data, cfg.eval_batch_size, cfg.bf16, sharded=world > 1,
                                               in_step=cfg.fsdp)
                epoch += 1
                record = {"epoch": epoch, "step": step, "train_loss": train_loss,
                          "train_acc": total_correct / total_seen, "test_loss": test_loss, "test_acc": test_acc,
                          "lr": lr, "seconds": time.perf_counter() - t0}
                history.append(record)
                if out is not None:
                    error = None
                    states = fsdp.gather(model, optimizer) if cfg.fsdp else None   # every rank takes part
                    if main_rank:
                        try:
                            save(epoch, states)
                            append_jsonl(out / "metrics.jsonl", [record])
                        except OSError as e:
                            kept = f"{ckpt} still holds epoch {last_saved}" if last_saved else "nothing was saved"
                            error = LandscapeError(f"cannot write {ckpt}: {e.strerror or e}; {kept}")
                    distributed.agree(error)
                    last_saved = epoch
                for cb in epoch_cbs:
                    cb(epoch, model, record)
            if stop is not None:
                status = "interrupted"
    finally:
        bar.close()
        for thing in reversed(owned):
            close = getattr(thing, "close", None)
            if callable(close):
                close()
    return {"status": status, "signal": stop, "model": model, "history": history,
            "final": history[-1] if history else None, "epoch": epoch,
            "step": step, "out": None if out is None else str(out),
            "checkpoint": None if ckpt is None or last_saved is None else str(ckpt), "config": cfg.to_dict(),
            "world_size": world}


def _check_finite(value: float, epoch: int, step: int, ckpt: Path | None, last_saved: int | None) -> None:
    if math.isfinite(value):
        return
    if ckpt is None:
        kept = "nothing was saved (no --out)"
    elif last_saved is None:
        kept = f"no checkpoint was written to {ckpt.parent}"
    else:
        kept = f"{ckpt} still holds epoch {last_saved}"
    raise NonFiniteLoss(f"training loss became {value} in epoch {epoch + 1} (by step {step}); stopped, "
                        f"{kept}; lower --lr, add --clip-grad or warm up")
