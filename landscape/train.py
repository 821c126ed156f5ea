"""Train a landscape model on a named data set; resumable bit-for-bit on CPU.

    python -m landscape.train --model fc --model-config '{"kind": "residual", "depth": 20, "width": 128}' \\
        --epochs 30 --optimizer adam --lr 1e-3 --out runs/res20
    python -m landscape.train --config experiments/train_resnetv2_cifar10.toml --out runs/r18 --resume

Writes OUT/config.json (resolved config, git commit, versions), OUT/metrics.jsonl (one JSON line per
epoch: train loss/acc as running means over the epoch, test loss/acc, lr, seconds) and OUT/checkpoint.pt
after every epoch (atomic; `landscape.load_checkpoint` rebuilds the model from it).

Learning rate at optimizer step s (0-based), T steps in all, W = warmup_epochs × steps per epoch:
    warmup  s < W:  lr · (s+1)/W
    constant:       lr
    step:           lr · γ^(number of milestones ≤ current epoch index)
    cosine:         lr · ½(1 + cos(π (s−W)/(T−W)))
It is a pure function of s, so a resumed run needs no scheduler state.

Interrupts: SIGINT/SIGTERM stop the run at the next step boundary; the checkpoint of the last complete
epoch stays and the CLI exits 128+signal (130, 143) with "resume with --resume". A non-finite loss
stops the run with a one-line error (exit 2) and leaves the last good checkpoint untouched.

Several processes (DistributedDataParallel; gloo on CPU, NCCL on CUDA with one GPU per LOCAL_RANK):
    torchrun --standalone --nproc_per_node W -m landscape.train ... --out runs/x
Every rank holds the data set and draws the same shuffle; rank r takes the r-th contiguous slice of each
global batch of B samples (sizes n_r differ by at most one) and weights its mean loss by n_r·W/B, so
DDP's average of the W gradients is the global-batch mean (1/B) Σ_i ∇ℓ_i: the run follows the
single-process trajectory up to float rounding. Each rank needs ≥ 1 sample of every batch (B ≥ W and
the last batch ≥ W). Rank 0 writes config.json, metrics.jsonl and checkpoint.pt and shows progress;
metrics are summed over ranks; a signal to any rank stops all after the same step (one all_reduce per
step). A checkpoint holds the unwrapped model and the shared RNG states, so `--resume` works with any
number of ranks. BatchNorm becomes SyncBatchNorm on CUDA; under gloo it keeps per-rank statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from landscape import distributed
from landscape.checkpoint import (
    CheckpointError,
    atomic_write,
    load_training_state,
    nonfinite_tensors,
    remove_stale_temp_files,
    save_checkpoint,
    set_rng_state,
    state_mismatch,
)
from landscape.cli import run_cli
from landscape.data import DATASETS, TensorData, load_data, shard
from landscape.errors import LandscapeError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# config keys a model takes from the data when the user leaves them out
_DATA_KEYS = {"fc": ("in_dim", "n_classes"), "resnetv2": ("in_channels", "n_classes"),
              "resnet_zaeemzadeh": ("in_channels", "n_classes"),
              "procresnet": ("in_channels", "n_classes", "img_size"),
              "vit": ("in_channels", "n_classes", "img_size")}
# keys that may change when a run is resumed; everything else must match the checkpoint
_RESUMABLE_CHANGES = {"epochs", "resume", "out", "device", "progress", "probes", "probe_every", "download",
                      "data_root", "eval_batch_size", "threads"}


@dataclass
class TrainConfig:
    """Everything a run depends on. TOML files and CLI flags use these names (flags with dashes)."""

    model: str = "fc"
    model_config: dict = field(default_factory=dict)
    data: str = "mnist1d"
    data_root: str | None = None
    n_samples: int | None = None
    data_seed: int = 0
    download: bool = False
    augment: bool = False
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    clip_grad: float | None = None
    label_smoothing: float = 0.0
    bias_reg: float = 0.0
    bias_target: float = 0.0
    bias_targets: str = "branch"
    procrustes_p: float = 0.0
    device: str = "auto"
    bf16: bool = False
    threads: int | None = None
    seed: int = 0
    out: str | None = None
    resume: bool = False
    probes: list[str] = field(default_factory=list)
    probe_every: int = 100
    progress: bool | None = None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build and validate from plain data; unknown keys are a `LandscapeError` naming them."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise LandscapeError(f"unknown training option(s) {unknown}; known: {', '.join(names)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise LandscapeError(what)

        def is_int(val) -> bool:
            return isinstance(val, int) and not isinstance(val, bool)

        for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma", "label_smoothing", "bias_reg",
                    "bias_target", "procrustes_p"):
            val = getattr(self, key)
            need(isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val),
                 f"{key} must be a finite number, got {val!r}")
            setattr(self, key, float(val))
        for key in ("epochs", "batch_size", "eval_batch_size", "seed", "data_seed", "probe_every"):
            val = getattr(self, key)
            need(is_int(val), f"{key} must be an integer, got {val!r}")
        for key in ("model", "data", "device", "bias_targets"):
            val = getattr(self, key)
            need(isinstance(val, str), f"{key} must be a string, got {val!r}")
        for key in ("data_root", "out"):
            val = getattr(self, key)
            need(val is None or (isinstance(val, str) and val != ""), f"{key} must be a path, got {val!r}")
        for key in ("download", "augment", "bf16", "resume"):
            val = getattr(self, key)
            need(isinstance(val, bool), f"{key} must be true or false, got {val!r}")
        need(self.progress is None or isinstance(self.progress, bool),
             f"progress must be true, false or unset, got {self.progress!r}")
        need(isinstance(self.model_config, dict), f"model_config must be a table, got {self.model_config!r}")
        need(self.data in DATASETS, f"unknown data set {self.data!r}; known: {', '.join(DATASETS)}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        need(self.epochs >= 1 and self.batch_size >= 1 and self.eval_batch_size >= 1,
             "epochs, batch_size and eval_batch_size must be positive")
        need(0 <= self.seed < 2**63, f"seed must lie in [0, 2**63), got {self.seed}")
        need(0 <= self.data_seed < 2**32, f"data_seed must lie in [0, 2**32), got {self.data_seed}")
        need(self.lr > 0, f"lr must be positive and finite, got {self.lr}")
        need(self.momentum >= 0, f"momentum must be ≥ 0, got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")
        need(self.gamma > 0, f"gamma must be positive, got {self.gamma}")
        need(self.warmup_epochs >= 0, f"warmup_epochs must be ≥ 0, got {self.warmup_epochs}")
        need(isinstance(self.milestones, list) and all(is_int(m) and m > 0 for m in self.milestones),
             f"milestones must be a list of positive epoch numbers, got {self.milestones!r}")
        need(self.clip_grad is None or (isinstance(self.clip_grad, (int, float)) and not isinstance(
            self.clip_grad, bool) and 0 < self.clip_grad < math.inf),
             f"clip_grad must be positive and finite (or unset), got {self.clip_grad!r}")
        need(0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        need(self.bias_reg >= 0, f"bias_reg must be ≥ 0, got {self.bias_reg}")
        need(0.0 <= self.procrustes_p <= 1.0, f"procrustes_p must lie in [0, 1], got {self.procrustes_p}")
        need(self.probe_every >= 1, f"probe_every must be ≥ 1, got {self.probe_every}")
        need(isinstance(self.probes, list) and all(isinstance(p, str) for p in self.probes),
             f"probes must be a list of names, got {self.probes!r}")
        need(self.threads is None or (is_int(self.threads) and self.threads > 0),
             f"threads must be a positive integer, got {self.threads!r}")
        need(self.n_samples is None or (is_int(self.n_samples) and self.n_samples > 0),
             f"n_samples must be a positive integer, got {self.n_samples!r}")


# ---- probes: named step callbacks that later modules register ----

StepCallback = Callable[[int, nn.Module, tuple[Tensor, Tensor], Tensor], None]


@dataclass
class ProbeContext:
    """What a probe factory may use to set itself up (fixed probe batches, output directory...)."""

    model: nn.Module
    train_data: TensorData
    test_data: TensorData
    config: TrainConfig
    out: Path | None


PROBES: dict[str, Callable[[ProbeContext], StepCallback]] = {}


def register_probe(name: str, factory: Callable[[ProbeContext], StepCallback]) -> None:
    """Make `--probes name` available: `factory(context)` returns `callback(step, model, (X, y), loss)`,
    called after every `probe_every`-th optimizer step (optionally with a `close()` called at the end)."""
    PROBES[name] = factory


def _make_probes(names: Sequence[str], ctx: ProbeContext) -> list[StepCallback]:
    _check_probe_names(names)
    return [PROBES[n](ctx) for n in names]


# ---- the pieces of the loop ----

def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step` (0-based); see the module docstring."""
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "step":
        return cfg.gamma ** sum(m <= step // steps_per_epoch for m in cfg.milestones)
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return 1.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """sgd (momentum, coupled L2), adam (coupled L2, as B.4's ViT recipe) or adamw (decoupled)."""
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorData, batch_size: int = 1024, bf16: bool = False, *, sharded: bool = False
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over `data` in eval mode; the model's mode is restored.

    sharded: under torch.distributed each rank evaluates its share (`distributed.shard`) and the sums are
    all-reduced, so every rank gets the full-data numbers; a collective: every rank must call it.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=data.device)    # Σ loss, Σ correct
    try:
        for X, y in (shard(data) if sharded else data).batches(batch_size):
            with _autocast(bf16):
                logits = model(X)
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
            sums[1] += (logits.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    if sharded:
        distributed.all_reduce_sum(sums)
    return sums[0].item() / len(data), sums[1].item() / len(data)


def _autocast(bf16: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def resolved_model_config(cfg: TrainConfig, data: TensorData) -> dict:
    """`cfg.model_config` with the data-given sizes filled in and the run's seed as default init seed."""
    derived = {"n_classes": data.n_classes, "in_dim": math.prod(data.X.shape[1:]),
               "in_channels": data.X.shape[1] if data.X.dim() == 4 else 1, "img_size": data.X.shape[-1]}
    out = dict(cfg.model_config)
    for key in _DATA_KEYS.get(cfg.model, ("n_classes",)):
        out.setdefault(key, derived[key])
    out.setdefault("seed", cfg.seed)
    return out


class NonFiniteLoss(LandscapeError):
    """The training loss became NaN or infinite."""


class _Signals:
    """Turns SIGINT/SIGTERM into a flag read at step boundaries; a second signal stops at once."""

    def __init__(self, enabled: bool):
        self.received: int | None = None
        self._old: dict[int, object] = {}
        self.enabled = enabled

    def __enter__(self) -> _Signals:
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# ---- the loop ----

def train(config: TrainConfig | dict, *, step_callbacks: Sequence[StepCallback] = (),
          handle_signals: bool = False) -> dict:
    """Train per `config`; with `config.out` set, checkpoint every epoch and resume with `config.resume`.

    step_callbacks: called as `cb(step, model, (X, y), loss)` after every optimizer step (step counts from 1).
    handle_signals: catch SIGINT/SIGTERM (main thread only) and stop cleanly at the next step boundary.
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
    run = distributed.main_first(lambda: _prepare(cfg, device, out, ckpt, world))
    model, optimizer, shuffle_gen, procrustes, penalty = (run.model, run.optimizer, run.shuffle_gen,
                                                          run.procrustes, run.penalty)
    train_data, test_data = run.train_data, run.test_data
    history, epoch, step = run.history, run.epoch, run.step
    net = model if world == 1 else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

    n, B = len(train_data), cfg.batch_size
    steps_per_epoch = math.ceil(n / B)
    last_saved = epoch if run.resumed else None
    callbacks = list(step_callbacks)
    probes: list[StepCallback] = []
    bar = _progress(cfg, total=cfg.epochs * steps_per_epoch, initial=step, enabled=main_rank)
    status, stop = "completed", None

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
    try:
        error = None
        if main_rank:
            try:
                probes = _make_probes(cfg.probes, ProbeContext(model, train_data, test_data, cfg, out))
                if out is not None:
                    _write_text(out / "config.json", json.dumps(
                        _run_record(cfg, model, train_data, test_data, device, world), indent=2) + "\n")
                    _write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            except OSError as e:
                error = LandscapeError(f"cannot write to --out {out}: {e.strerror or e}")
            except LandscapeError as e:
                error = e
        distributed.agree(error)
        with _Signals(handle_signals) as signals:
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
                    lr = cfg.lr * lr_factor(step, steps_per_epoch, cfg)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    with _autocast(cfg.bf16):
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
                    if probes and step % cfg.probe_every == 0:
                        for probe in probes:
                            probe(step, model, batch, loss.detach())
                    bar.update(1)
                    stop = agreed_stop(signals.received)
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
                test_loss, test_acc = evaluate(model, test_data, cfg.eval_batch_size, cfg.bf16, sharded=world > 1)
                epoch += 1
                record = {"epoch": epoch, "step": step, "train_loss": train_loss,
                          "train_acc": total_correct / total_seen, "test_loss": test_loss, "test_acc": test_acc,
                          "lr": lr, "seconds": time.perf_counter() - t0}
                history.append(record)
                if out is not None:
                    error = None
                    if main_rank:
                        try:
                            _save(ckpt, model, optimizer, shuffle_gen, procrustes, cfg, train_data, test_data,
                                  epoch, step, history, world)
                            with open(out / "metrics.jsonl", "a") as f:
                                f.write(json.dumps(record) + "\n")
                        except OSError as e:
                            kept = f"{ckpt} still holds epoch {last_saved}" if last_saved else "nothing was saved"
                            error = LandscapeError(f"cannot write {ckpt}: {e.strerror or e}; {kept}")
                    distributed.agree(error)
                    last_saved = epoch
            if stop is not None:
                status = "interrupted"
    finally:
        bar.close()
        for probe in probes:
            close = getattr(probe, "close", None)
            if callable(close):
                close()
    return {"status": status, "signal": stop, "model": model, "history": history,
            "final": history[-1] if history else None, "epoch": epoch,
            "step": step, "out": None if out is None else str(out),
            "checkpoint": None if ckpt is None or last_saved is None else str(ckpt), "config": cfg.to_dict(),
            "world_size": world}


@dataclass
class _Setup:
    """What `_prepare` hands the loop."""

    train_data: TensorData
    test_data: TensorData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle_gen: torch.Generator
    procrustes: object | None
    penalty: Callable[[], Tensor] | None
    history: list[dict]
    epoch: int
    step: int
    resumed: bool


def _prepare(cfg: TrainConfig, device: torch.device, out: Path | None, ckpt: Path | None, world: int) -> _Setup:
    """Everything that can fail on bad input, before any file is written: the checkpoint to resume, the data,
    the model (one forward as a shape check), optimizer and RNG states; finally the --out directory."""
    from landscape.models import build

    _check_probe_names(cfg.probes)
    state = None
    if ckpt is not None and ckpt.exists():
        if not cfg.resume:
            raise LandscapeError(f"{ckpt} exists: pass --resume to continue that run or choose another --out")
        state = load_training_state(ckpt)
        problem = _training_state_problem(state)
        nonfinite = nonfinite_tensors(state["model_state"])
        problem = problem or (f"non-finite weights: {nonfinite}" if nonfinite else "")
        if problem:
            raise CheckpointError(f"checkpoint {ckpt}: cannot resume from it ({problem})")
        _check_resumable(ckpt, state["meta"]["train"], cfg)
    elif cfg.resume and out is None:
        raise LandscapeError("--resume needs --out (the directory of the run to continue)")
    elif cfg.resume and distributed.is_main():
        print(f"no checkpoint in {out}: starting from scratch", file=sys.stderr)
    if out is not None:
        _check_out(out)

    data_args = {"name": cfg.data, "n_samples": cfg.n_samples, "root": cfg.data_root, "device": device,
                 "seed": cfg.data_seed, "download": cfg.download}
    train_data = load_data(split="train", **data_args)
    test_data = load_data(split="test", **data_args)
    _check_world(len(train_data), cfg.batch_size, world)
    torch.manual_seed(cfg.seed)
    model_config = resolved_model_config(cfg, train_data)
    try:
        model = build(cfg.model, model_config)
    except LandscapeError:
        raise
    except Exception as e:  # noqa: BLE001 - a model config the constructors reject is bad input
        raise LandscapeError(f"cannot build model {cfg.model!r} from {model_config}: "
                             f"{type(e).__name__}: {_first_line(e)}") from None
    model = model.to(device)
    _check_fits(model, train_data, cfg)
    if world > 1 and device.type == "cuda":                      # global-batch statistics, as one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif world > 1 and distributed.is_main() and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                     for m in model.modules()):
        print("note: BatchNorm uses per-rank batch statistics under gloo (SyncBatchNorm needs CUDA), so this "
              "run differs from a single-process one", file=sys.stderr)
    if not any(p.requires_grad for p in model.parameters()):
        raise LandscapeError(f"model {cfg.model!r} has no trainable parameters")
    optimizer = make_optimizer(model, cfg)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    procrustes = None
    if cfg.procrustes_p > 0:
        from landscape.models.procrustes import ProcrustesRegularizer

        gen = torch.Generator().manual_seed(cfg.seed + 1)
        procrustes = ProcrustesRegularizer(model, cfg.procrustes_p, gen)
    penalty = None
    if cfg.bias_reg > 0:
        from landscape.models.biasreg import bias_penalty

        def penalty() -> Tensor:
            return bias_penalty(model, cfg.bias_reg, cfg.bias_target, cfg.bias_targets)

        penalty()                                                # bad bias targets fail here, not mid-run

    history: list[dict] = []
    epoch = step = 0
    if state is not None:
        problem = state_mismatch(model.state_dict(), state["model_state"])
        if problem:
            raise CheckpointError(f"checkpoint {ckpt}: weights do not fit the configured model: {problem}")
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            problem = _optimizer_problem(optimizer, settings)
            if problem:
                raise CheckpointError(f"checkpoint {ckpt}: its optimizer state does not fit the run: {problem}")
            set_rng_state(state["rng"])
            shuffle_gen.set_state(state["extra"]["shuffle_rng"])
            if procrustes is not None:
                procrustes.generator.set_state(state["extra"]["procrustes_rng"])
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - torch's loaders reject malformed states with assorted errors
            raise CheckpointError(f"checkpoint {ckpt}: cannot restore the training state "
                                  f"({type(e).__name__}: {_first_line(e)})") from None
        meta = state["meta"]
        history, epoch, step = list(meta["history"]), meta["epoch"], meta["step"]
        if epoch > cfg.epochs:
            raise LandscapeError(f"{ckpt} already holds {epoch} epochs, more than --epochs {cfg.epochs}")
    if out is not None and distributed.is_main():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LandscapeError(f"cannot create --out {out}: {e.strerror or e}") from None
        remove_stale_temp_files(out)
    return _Setup(train_data, test_data, model, optimizer, shuffle_gen, procrustes, penalty, history, epoch,
                  step, state is not None)


def _save(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle_gen: torch.Generator,
          procrustes, cfg: TrainConfig, train_data: TensorData, test_data: TensorData, epoch: int, step: int,
          history: list[dict], world: int) -> None:
    extra = {"shuffle_rng": shuffle_gen.get_state()}
    if procrustes is not None:
        extra["procrustes_rng"] = procrustes.generator.get_state()
    meta = {"model": model.build_spec, "data": train_data.spec, "test_data": test_data.spec,
            "epoch": epoch, "step": step, "train": cfg.to_dict(), "history": history, "world_size": world}
    save_checkpoint(ckpt, model, meta=meta, optimizer=optimizer, extra=extra)


def _check_probe_names(names: Sequence[str]) -> None:
    if not names:
        return
    with contextlib.suppress(ImportError):
        importlib.import_module("landscape.probes")  # lets the probes package register its probes
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        known = ", ".join(sorted(PROBES)) or "none registered"
        raise LandscapeError(f"unknown probe(s) {unknown}; known: {known}")


def _check_out(out: Path) -> None:
    """--out must be a directory or creatable as one, and writable; checked before the data is loaded."""
    if out.exists() and not out.is_dir():
        raise LandscapeError(f"--out {out} exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LandscapeError(f"cannot create --out {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LandscapeError(f"--out {out}: {parent} is not writable")


def _check_world(n: int, batch_size: int, world: int) -> None:
    """Every rank needs at least one sample of every batch (an empty slice has no mean loss)."""
    last = n % batch_size or batch_size
    if world > 1 and min(batch_size, last) < world:
        raise LandscapeError(f"{world} ranks need at least one sample each of every batch, but the batches of "
                             f"{n} samples by --batch-size {batch_size} include one of {min(batch_size, last)}; "
                             "change --batch-size or --n-samples")


def _check_fits(model: nn.Module, data: TensorData, cfg: TrainConfig) -> None:
    """One eval-mode forward of two samples (RNG states untouched): the model must take the data's inputs
    and return [batch, n_classes] logits."""
    was_training = model.training
    model.eval()
    devices = [data.device] if data.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices), _autocast(cfg.bf16):
            logits = model(data.X[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise LandscapeError(f"model {cfg.model!r} does not take {data.spec.get('name')} inputs of shape "
                             f"{list(data.X.shape[1:])}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    expected = (min(2, len(data)), data.n_classes)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise LandscapeError(f"model {cfg.model!r} returns {got} for 2 samples; {data.spec.get('name')} needs "
                             f"logits [batch, {data.n_classes}] (check n_classes in --model-config)")


def _training_state_problem(state: dict) -> str:
    """'' when the checkpoint holds what a resume needs (train writes it), else what is missing."""
    meta, extra = state["meta"], state.get("extra")
    for key, kind in (("train", dict), ("epoch", int), ("step", int), ("history", list)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"meta has no {key} ({kind.__name__}); it was not written by landscape.train"
    history = meta["history"]
    if meta["epoch"] < 0 or meta["step"] < 0 or len(history) != meta["epoch"]:
        return f"meta says epoch {meta['epoch']}, step {meta['step']} with {len(history)} history records"
    try:
        json.dumps(history, allow_nan=True)
    except (TypeError, ValueError):
        return "its history is not plain JSON data"
    if not all(isinstance(h, dict) for h in history):
        return "its history records are not tables"
    if not isinstance(state.get("optimizer_state"), dict):
        return "no optimizer state"
    if not isinstance(state.get("rng"), dict) or not isinstance(state["rng"].get("torch"), Tensor):
        return "no RNG state"
    if not isinstance(extra, dict) or not isinstance(extra.get("shuffle_rng"), Tensor):
        return "no shuffle generator state"
    return ""


def _optimizer_problem(optimizer: torch.optim.Optimizer, settings: list[dict]) -> str:
    """'' when a loaded optimizer state fits the configured optimizer, else what does not.

    settings: the param_groups of the configured optimizer before loading (lr is set every step, so it may
    differ). Each parameter's state must hold the buffers one step of the same optimizer creates (found by
    stepping a one-element probe), shaped like the parameter and finite, and a step count ≥ 0.
    """
    for group, expected in zip(optimizer.param_groups, settings):
        for key, value in expected.items():
            if key != "lr" and not _same(group.get(key), value):
                return f"{key} {_short(group.get(key))} instead of {_short(value)}"
    accepted = inspect.signature(type(optimizer)).parameters
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.zeros(1)
    reference = type(optimizer)([probe], **{k: v for k, v in settings[0].items() if k in accepted})
    reference.step()
    expected_state = reference.state[probe]
    for param, buffers in optimizer.state.items():
        if not isinstance(buffers, dict) or set(buffers) != set(expected_state):
            found = sorted(map(str, buffers)) if isinstance(buffers, dict) else type(buffers).__name__
            return f"a parameter's state holds {found} instead of {sorted(expected_state)}"
        for key, value in buffers.items():
            ref = expected_state[key]
            if key == "step":
                ok = isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point() and bool(
                    torch.isfinite(value).all() and (value >= 0).all())
            elif ref is None:
                ok = value is None
            else:
                ok = (isinstance(value, Tensor) and value.shape == param.shape and value.dtype == param.dtype
                      and bool(torch.isfinite(value).all()))
            if not ok:
                return f"{key} is {_short(value)} for a parameter of shape {list(param.shape)}"
    return ""


def _same(a: object, b: object) -> bool:
    """Equality of plain values read from a file (which may hold anything, tensors too)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def _short(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return " ".join(repr(value).split())[:60]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


def _check_resumable(ckpt: Path, saved: dict, cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    diff = [f"{k}: {_short(saved.get(k))} in the checkpoint vs {now[k]!r}" for k in now
            if k not in _RESUMABLE_CHANGES and not _same(saved.get(k), now[k])]
    if diff:
        raise LandscapeError(f"cannot resume {ckpt} with a different configuration ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}); use another --out for a new run")


def _progress(cfg: TrainConfig, total: int, initial: int, enabled: bool = True):
    from tqdm.auto import tqdm

    disable = None if cfg.progress is None else not cfg.progress  # None: only when stderr is a terminal
    disable = True if not enabled else disable
    return tqdm(total=total, initial=initial, disable=disable, file=sys.stderr, dynamic_ncols=True,
                unit="step")


def _run_record(cfg: TrainConfig, model: nn.Module, train_data: TensorData, test_data: TensorData,
                device: torch.device, world: int = 1) -> dict:
    """What config.json records beside the results: the resolved config and the code version."""
    import landscape

    return {"config": cfg.to_dict(), "model": model.build_spec, "data": {"train": train_data.spec,
                                                                          "test": test_data.spec},
            "n_parameters": sum(p.numel() for p in model.parameters()), "device": str(device), "world_size": world,
            "git": git_version(), "landscape": landscape.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "argv": sys.argv}


def git_version() -> dict | None:
    """{"commit", "dirty"} of the checkout holding this package, or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


# ---- CLI ----

def load_toml(path: str | os.PathLike) -> dict:
    """A TOML file of `TrainConfig` keys (a `[model_config]` table for the model)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise LandscapeError("reading TOML configs needs Python >= 3.11 or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LandscapeError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise LandscapeError(f"config file {path}: invalid TOML ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # unset flags stay absent, so --config values survive
    p = argparse.ArgumentParser(prog="python -m landscape.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=S)
    p.add_argument("--config", help="TOML file of training options; flags given here override it")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="model name (landscape.models.available()), default fc")
    g.add_argument("--model-config", type=_json_dict, metavar="JSON",
                   help='model options as JSON, merged over the config file\'s: \'{"kind": "residual"}\'')
    g = p.add_argument_group("data")
    g.add_argument("--data", help=f"data set: {', '.join(DATASETS)} (default mnist1d)")
    g.add_argument("--data-root", help="directory of the image data sets (default: the landscape cache)")
    g.add_argument("--n-samples", type=int, help="training-set size (MNIST-1D: generated; images: first n)")
    g.add_argument("--data-seed", type=int, help="MNIST-1D generation seed (default 0)")
    g.add_argument("--download", action="store_true", help="download a missing image data set (torchvision)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random reflect-pad-4 crop + horizontal flip of training images")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, help="number of epochs (default 30)")
    g.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    g.add_argument("--eval-batch-size", type=int, help="batch size of the test evaluation (default 1024)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd, adam (L2) or adamw (default adam)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    g.add_argument("--schedule", choices=SCHEDULES, help="lr schedule after warm-up (default constant)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up length in epochs (default 0)")
    g.add_argument("--milestones", type=_int_list, metavar="E1,E2",
                   help="epochs at which the step schedule multiplies the lr by --gamma")
    g.add_argument("--gamma", type=float, help="step-schedule factor (default 0.1)")
    g.add_argument("--clip-grad", type=float, help="clip the global gradient norm to this value")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the training loss (default 0)")
    g.add_argument("--bias-reg", type=float, metavar="STRENGTH",
                   help="BiasReg strength λ_b: adds λ_b Σ (b − β)² (SPEC A.2, a reconstruction)")
    g.add_argument("--bias-target", type=float, metavar="BETA", help="BiasReg target β (default 0)")
    g.add_argument("--bias-targets", help="which biases BiasReg covers: branch (default) or linear")
    g.add_argument("--procrustes-p", type=float, metavar="P",
                   help="Procrustes projection after each step with probability P (models with "
                        "procrustes_targets, SPEC C.3)")
    g = p.add_argument_group("run")
    g.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default auto)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    g.add_argument("--threads", type=int, help="CPU threads torch may use (default: torch's choice)")
    g.add_argument("--seed", type=int, help="seed of weights, shuffling and the global RNG (default 0)")
    g.add_argument("--out", help="run directory: config.json, metrics.jsonl, checkpoint.pt")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--probes", type=_str_list, metavar="A,B", help="registered step probes to run")
    g.add_argument("--probe-every", type=int, metavar="K", help="run the probes every K steps (default 100)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    return p


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Defaults ← --config TOML ← flags (model_config tables are merged key by key)."""
    args = vars(build_parser().parse_args(argv))
    merged: dict = {}
    if "config" in args:
        merged.update(load_toml(args.pop("config")))
    model_config = {**merged.get("model_config", {}), **args.pop("model_config", {})}
    merged.update(args)
    if model_config or "model_config" in merged:
        merged["model_config"] = model_config
    return TrainConfig.from_dict(merged)


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)
    ok = False
    try:
        result = train(cfg, handle_signals=True)
        ok = True
    except LandscapeError:
        ok = True                    # raised on every rank alike (distributed.agree): they can leave together
        if distributed.env_rank() > 0:
            return 2                 # rank 0 prints the message once
        raise
    finally:
        distributed.shutdown(sync=ok)
    if distributed.env_rank() > 0:
        return 128 + result["signal"] if result["status"] == "interrupted" else 0
    if result["status"] == "interrupted":
        name = signal.Signals(result["signal"]).name
        where = (f"{result['checkpoint']} holds epoch {result['epoch']}" if result["checkpoint"]
                 else "no epoch was completed")
        print(f"interrupted by {name}: {where}; resume with --resume", file=sys.stderr)
        return 128 + result["signal"]
    final = result["final"]
    print(f"epoch {final['epoch']}: train loss {final['train_loss']:.4f} acc {final['train_acc']:.4f} | "
          f"test loss {final['test_loss']:.4f} acc {final['test_acc']:.4f}"
          + (f" | {result['checkpoint']}" if result["checkpoint"] else ""))
    return 0


if __name__ == "__main__":
    distributed.exit_process(run_cli(main))
