"""Checkpoint and resume of a training run: what a checkpoint holds, and the checks before a resume.

`save_state` writes RUN/checkpoint.pt (and, with --keep-epochs, RUN/epochs/epoch_NNNN.pt) in the
`landscape.checkpoint` format: the weights, the optimizer state, the global RNG states, and in
`extra` the shuffle generator (and the Procrustes generator), so a resumed run draws exactly what
the uninterrupted one would; `meta` holds the resolved config, epoch, step and the metric history.
`load_resume_state` refuses, with one line naming the problem, any checkpoint that was not written
by landscape.train, holds non-finite weights, or was written with a configuration that differs in
a key outside `RESUMABLE_CHANGES`; `restore` then loads it into the freshly built run.
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from landscape.checkpoint import (
    CheckpointError,
    load_training_state,
    nonfinite_tensors,
    save_checkpoint,
    set_rng_state,
    state_mismatch,
)
from landscape.data import TensorData
from landscape.errors import LandscapeError, first_line
from landscape.io import atomic_write
from landscape.train.config import RESUMABLE_CHANGES, TrainConfig

EPOCHS_DIR = "epochs"


def epoch_path(out: Path, epoch: int) -> Path:
    """RUN/epochs/epoch_NNNN.pt: the checkpoint kept after `epoch` epochs (0 = the initial weights).

    Args:
        out: the run directory; epoch: epochs completed.

    Returns:
        The path.
    """
    return out / EPOCHS_DIR / f"epoch_{epoch:04d}.pt"


@dataclass
class TrainingState:
    """What a checkpoint holds and a resume restores: the run's live objects and its position.

    Attributes:
        model, optimizer: the (unwrapped) model and its optimizer.
        shuffle_gen: the generator of the batch order; procrustes: the Procrustes regularizer (its generator
            is saved) or None.
        config: the run's `TrainConfig`; train_data, test_data: the splits (their specs are saved).
        world_size: the number of ranks that train.
        epoch, step: completed epochs and optimizer steps; history: one metrics record per completed epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle_gen: torch.Generator
    procrustes: object | None
    config: TrainConfig
    train_data: TensorData
    test_data: TensorData
    world_size: int = 1
    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)


def save_state(ckpt: Path, state: TrainingState) -> None:
    """Write everything a bit-exact resume needs to `ckpt` (atomic).

    Args:
        ckpt: the file to write (RUN/checkpoint.pt, or RUN/epochs/epoch_0000.pt for the initial weights).
        state: the run at the end of `state.epoch` epochs.
    """
    extra = {"shuffle_rng": state.shuffle_gen.get_state()}
    if state.procrustes is not None:
        extra["procrustes_rng"] = state.procrustes.generator.get_state()
    meta = {"model": state.model.build_spec, "data": state.train_data.spec, "test_data": state.test_data.spec,
            "epoch": state.epoch, "step": state.step, "train": state.config.to_dict(), "history": state.history,
            "world_size": state.world_size}
    save_checkpoint(ckpt, state.model, meta=meta, optimizer=state.optimizer, extra=extra)


def keep_copy(ckpt: Path, out: Path, epoch: int) -> Path:
    """Copy the checkpoint just written to RUN/epochs/epoch_NNNN.pt (atomic: a reader never sees half a file).

    Args:
        ckpt: the checkpoint just written; out: the run directory; epoch: its epoch.

    Returns:
        The copy's path.
    """
    path = epoch_path(out, epoch)
    path.parent.mkdir(exist_ok=True)
    with open(ckpt, "rb") as src, atomic_write(path) as dst:
        shutil.copyfileobj(src, dst)
    return path


def load_resume_state(ckpt: Path, cfg: TrainConfig) -> dict:
    """The checkpoint's payload, checked to be a landscape.train checkpoint of this configuration.

    Args:
        ckpt: the checkpoint; cfg: the configuration that resumes it.

    Returns:
        The payload.

    Raises:
        CheckpointError, LandscapeError: one line naming the problem.
    """
    state = load_training_state(ckpt)
    problem = training_state_problem(state)
    nonfinite = nonfinite_tensors(state["model_state"])
    problem = problem or (f"non-finite weights: {nonfinite}" if nonfinite else "")
    if problem:
        raise CheckpointError(f"checkpoint {ckpt}: cannot resume from it ({problem})")
    check_resumable(ckpt, state["meta"]["train"], cfg)
    return state


def restore(saved: dict, ckpt: Path, state: TrainingState) -> None:
    """Load weights, optimizer, RNG and generator states of a checkpoint payload into `state`, and set its
    history, epoch and step.

    Args:
        saved: the payload `load_resume_state` returned.
        ckpt: its path, for messages.
        state: the freshly built run (at epoch 0).

    Raises:
        CheckpointError: the weights or optimizer state do not fit the configured run.
    """
    model, optimizer = state.model, state.optimizer
    problem = state_mismatch(model.state_dict(), saved["model_state"])
    if problem:
        raise CheckpointError(f"checkpoint {ckpt}: weights do not fit the configured model: {problem}")
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    problem = saved_optimizer_problem(saved["optimizer_state"], optimizer)
    if problem:
        raise CheckpointError(f"checkpoint {ckpt}: its optimizer state does not fit the run: {problem}")
    try:
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        problem = optimizer_problem(optimizer, settings)
        if problem:
            raise CheckpointError(f"checkpoint {ckpt}: its optimizer state does not fit the run: {problem}")
        set_rng_state(saved["rng"])
        state.shuffle_gen.set_state(saved["extra"]["shuffle_rng"])
        if state.procrustes is not None:
            state.procrustes.generator.set_state(saved["extra"]["procrustes_rng"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's loaders reject malformed states with assorted errors
        raise CheckpointError(f"checkpoint {ckpt}: cannot restore the training state "
                              f"({type(e).__name__}: {first_line(e)})") from None
    meta = saved["meta"]
    state.history, state.epoch, state.step = list(meta["history"]), meta["epoch"], meta["step"]


def training_state_problem(state: dict) -> str:
    """'' when the checkpoint holds what a resume needs (train writes it), else what is missing.

    Args:
        state: a checkpoint payload.

    Returns:
        The problem, or ''.
    """
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


def saved_optimizer_problem(saved: object, optimizer: torch.optim.Optimizer) -> str:
    """'' when a checkpoint's optimizer state has the layout `optimizer.load_state_dict` reads, else what not.

    Checked before loading, so that a damaged state is named instead of failing inside torch: a table
    {"state": {id: table of buffers}, "param_groups": [{"params": [ids], ...}]} with as many groups as the
    optimizer, each listing as many distinct integer ids as the group has parameters, and state only for
    listed ids. The buffers themselves are checked after loading (`optimizer_problem`).

    Args:
        saved: the checkpoint's "optimizer_state" entry.
        optimizer: the freshly built optimizer of the run.

    Returns:
        '' or a short description of the first problem.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        return "not a table of state and param_groups"
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        return f"{len(groups)} parameter groups instead of {len(optimizer.param_groups)}"
    ids: list[int] = []
    for k, (group, mine) in enumerate(zip(groups, optimizer.param_groups)):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(type(i) is int for i in params):
            return f"parameter group {k} has no list of parameter ids"
        if len(params) != len(mine["params"]):
            return f"parameter group {k} holds {len(params)} parameters instead of {len(mine['params'])}"
        ids += params
    if len(set(ids)) != len(ids):
        return "a parameter id is listed twice"
    for key, buffers in saved["state"].items():
        if type(key) is not int or key not in ids:
            return f"state for {_short(key)}, which is not a listed parameter id"
        if not isinstance(buffers, dict):
            return f"the state of parameter {key} is {_short(buffers)}, not a table of buffers"
    return ""


def optimizer_problem(optimizer: torch.optim.Optimizer, settings: list[dict]) -> str:
    """'' when a loaded optimizer state fits the configured optimizer, else what does not.

    settings: the param_groups of the configured optimizer before loading (lr is set every step, so it may
    differ). Each parameter's state must hold the buffers one step of the same optimizer creates (found by
    stepping a one-element stand-in parameter), shaped like the parameter and finite, and a step count ≥ 0.

    Args:
        optimizer: the configured optimizer after loading; settings: its param_groups before.

    Returns:
        The problem, or ''.
    """
    for group, expected in zip(optimizer.param_groups, settings):
        for key, value in expected.items():
            if key != "lr" and not _same(group.get(key), value):
                return f"{key} {_short(group.get(key))} instead of {_short(value)}"
    accepted = inspect.signature(type(optimizer)).parameters
    stand_in = torch.zeros(1, requires_grad=True)
    stand_in.grad = torch.zeros(1)
    reference = type(optimizer)([stand_in], **{k: v for k, v in settings[0].items() if k in accepted})
    reference.step()
    expected_state = reference.state[stand_in]
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


def check_resumable(ckpt: Path, saved: dict, cfg: TrainConfig) -> None:
    """The saved configuration must equal `cfg` in every key outside `RESUMABLE_CHANGES` (a key missing from
    the saved one counts as its default).

    Args:
        ckpt: the checkpoint's path, for the message.
        saved: its meta["train"].
        cfg: the configuration of the run that would resume it.

    Raises:
        LandscapeError: naming up to three keys that differ.
    """
    now, default = cfg.to_dict(), TrainConfig().to_dict()     # a key the checkpoint lacks has its default
    diff = [f"{k}: {_short(saved.get(k, default[k]))} in the checkpoint vs {now[k]!r}" for k in now
            if k not in RESUMABLE_CHANGES and not _same(saved.get(k, default[k]), now[k])]
    if diff:
        raise LandscapeError(f"cannot resume {ckpt} with a different configuration ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}); use another --out for a new run")


def _same(a: object, b: object) -> bool:
    """Equality of plain values read from a file (which may hold anything, tensors too)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def _short(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return " ".join(repr(value).split())[:60]
