"""Setting up a training run: everything that can fail on bad input, checked before the first step.

`prepare` loads the checkpoint to resume (if any), the data, builds the model (one forward of two
samples checks that it takes the data's inputs and returns [batch, n_classes] logits), the optimizer,
the regularizers and generators, restores a resumed state, and finally creates the run directory.
`run_record` is what config.json records about the run beside the results.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from landscape import distributed
from landscape.cli import check_writable, prepare_out_dir
from landscape.data import TensorData, load_data
from landscape.errors import LandscapeError, first_line
from landscape.io import remove_stale_temp_files
from landscape.modes import preserved_modes
from landscape.train.callbacks import measurement_sets
from landscape.train.config import TrainConfig, resolved_model_config
from landscape.train.losses import check_loss_output, training_loss
from landscape.train.optim import make_optimizer
from landscape.train.state import TrainingState, load_resume_state, restore


@dataclass
class Setup:
    """What `prepare` hands the loop.

    Attributes:
        state: the run's model, optimizer, data, generators and position (resumed or at epoch 0).
        penalty: the regularizer added to the loss (BiasReg), or None.
        resumed: whether `state` was loaded from a checkpoint.
    """

    state: TrainingState
    penalty: Callable[[], Tensor] | None
    resumed: bool


def autocast(bf16: bool):
    """bfloat16 autocast on CUDA, or nothing.

    Args:
        bf16: whether to autocast.

    Returns:
        A context manager.
    """
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def prepare(cfg: TrainConfig, device: torch.device, out: Path | None, ckpt: Path | None, world: int,
            check: Callable[[], None] = lambda: None) -> Setup:
    """Everything that can fail on bad input, before any file is written: the checkpoint to resume, the data,
    the model (one forward as a shape check), optimizer and RNG states; finally the --out directory.

    check: further validation (the probe names, optional packages) run before the data is loaded.

    Args:
        cfg: the run's config; device: where it trains; out, ckpt: its directory and checkpoint (or None);
        world: the number of ranks; check: further validation.

    Returns:
        The `Setup`.
    """
    from landscape.models import build

    check()
    state = None
    if ckpt is not None and ckpt.exists():
        if not cfg.resume:
            raise LandscapeError(f"{ckpt} exists: pass --resume to continue that run or choose another --out")
        state = load_resume_state(ckpt, cfg)
    elif cfg.resume and out is None:
        raise LandscapeError("--resume needs --out (the directory of the run to continue)")
    elif cfg.resume and distributed.is_main():
        print(f"no checkpoint in {out}: starting from scratch", file=sys.stderr)
    if out is not None:
        check_writable(out)

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
                             f"{type(e).__name__}: {first_line(e)}") from None
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

    run = TrainingState(model, optimizer, shuffle_gen, procrustes, cfg, train_data, test_data, world)
    if state is not None:
        restore(state, ckpt, run)
        if run.epoch > cfg.epochs:
            raise LandscapeError(f"{ckpt} already holds {run.epoch} epochs, more than --epochs {cfg.epochs}")
    if out is not None and distributed.is_main():
        prepare_out_dir(out)
        remove_stale_temp_files(out)
    return Setup(run, penalty, state is not None)


def run_record(cfg: TrainConfig, model: nn.Module, train_data: TensorData, test_data: TensorData,
               device: torch.device, world: int = 1) -> dict:
    """What config.json records beside the results: the resolved config, the measurement sets of the probes
    and the code version.

    Args:
        cfg, model, train_data, test_data, device, world: the run.

    Returns:
        config.json's content.
    """
    import landscape

    return {"config": cfg.to_dict(), "model": model.build_spec, "data": {"train": train_data.spec,
                                                                          "test": test_data.spec},
            "measurement_sets": measurement_sets(cfg, len(train_data)),
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


def _check_world(n: int, batch_size: int, world: int) -> None:
    """Every rank needs at least one sample of every batch (an empty slice has no mean loss)."""
    last = n % batch_size or batch_size
    if world > 1 and min(batch_size, last) < world:
        raise LandscapeError(f"{world} ranks need at least one sample each of every batch, but the batches of "
                             f"{n} samples by --batch-size {batch_size} include one of {min(batch_size, last)}; "
                             "change --batch-size or --n-samples")


def _check_fits(model: nn.Module, data: TensorData, cfg: TrainConfig) -> None:
    """One eval-mode forward of two samples (RNG states untouched): the model must take the data's inputs
    and return [batch, n_classes] logits, on which the run's loss returns a 0-dim tensor."""
    devices = [data.device] if data.device.type == "cuda" else []
    try:
        with preserved_modes(model, train=False), torch.no_grad(), torch.random.fork_rng(devices=devices), \
                autocast(cfg.bf16):
            logits = model(data.X[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise LandscapeError(f"model {cfg.model!r} does not take {data.spec.get('name')} inputs of shape "
                             f"{list(data.X.shape[1:])}: {first_line(e)}") from None
    expected = (min(2, len(data)), data.n_classes)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise LandscapeError(f"model {cfg.model!r} returns {got} for 2 samples; {data.spec.get('name')} needs "
                             f"logits [batch, {data.n_classes}] (check n_classes in --model-config)")
    check_loss_output(training_loss(cfg), logits.float(), data.y[:2], cfg.loss)
