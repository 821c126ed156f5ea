"""How `python -m landscape.surface` builds its directions from the command line: random, the top Hessian
eigenvectors, PCA of a trajectory, the segment to another checkpoint, or a directions file (docs/cli.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape import distributed
from landscape.errors import LandscapeError, first_line
from landscape.inputs import CliData


def other_weights(path: str, args: argparse.Namespace, device: torch.device, model: nn.Module) -> dict:
    """The parameters of another checkpoint of the same model.

    Args:
        path: the other checkpoint (a state_dict file with --model; an HF model directory when CKPT is one).
        args: the parsed command line (--model, CKPT).
        device: where to load it.
        model: CKPT's model, which the other must fit.

    Returns:
        {parameter name: tensor} of the other checkpoint.

    Raises:
        LandscapeError: it does not fit the model (one line naming the first mismatch).
    """
    from landscape.checkpoint import load_checkpoint, state_mismatch
    from landscape.inputs import hf_model, is_hf_dir, user_model

    if is_hf_dir(args.ckpt):
        if not is_hf_dir(path):
            raise LandscapeError(f"{path}: not an HF model directory like {args.ckpt}")
        other = hf_model(path, device)
    else:
        other = user_model(args.model, Path(path), device)[0] if args.model else load_checkpoint(path, device)[0]
    problem = state_mismatch(model.state_dict(), other.state_dict())
    if problem:
        raise LandscapeError(f"{path} does not match {args.ckpt}: {problem}")
    return {n: p.detach() for n, p in other.named_parameters()}


def trajectory_files(run_dir: str, dims: int) -> list[Path]:
    """The trajectory's checkpoints: n PCA directions of the centred differences need n + 1 of them.

    Args:
        run_dir: the run directory (RUN_DIR/epochs/epoch_*.pt, or RUN_DIR/epoch_*.pt).
        dims: the number of PCA directions.

    Returns:
        The checkpoint files in order.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise LandscapeError(f"--trajectory {root}: not a directory")
    files = sorted((root / "epochs").glob("epoch_*.pt")) or sorted(root.glob("epoch_*.pt"))
    if len(files) < dims + 1:
        raise LandscapeError(f"--trajectory {root}: {dims} PCA direction(s) need at least {dims + 1} checkpoints "
                             f"epochs/epoch_*.pt that differ from CKPT, found {len(files)} files")
    return files


def file_directions(args: argparse.Namespace, model: nn.Module) -> list:
    """The directions of --direction-file, one per --dims.

    Args:
        args: the parsed command line (--direction-file, --dims).
        model: the model the directions must fit.

    Returns:
        The directions as {parameter name: tensor} dicts.
    """
    from landscape.surface import as_direction

    path = Path(args.direction_file)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise LandscapeError(f"--direction-file {path}: cannot read it ({first_line(e)})") from None
    items = list(raw) if isinstance(raw, (list, tuple)) or (isinstance(raw, torch.Tensor) and raw.dim() == 2) \
        else [raw]
    if len(items) != args.dims or not all(isinstance(d, (dict, torch.Tensor)) for d in items):
        raise LandscapeError(f"--direction-file {path}: expected {args.dims} direction(s) (dicts or flat tensors) "
                             f"for --dims {args.dims}, got {len(items)}")
    return [as_direction(model, d, f"--direction-file {path}: direction {j}") for j, d in enumerate(items)]


def build_directions(args: argparse.Namespace, model: nn.Module, data: CliData,
                     device: torch.device) -> tuple[list, dict, np.ndarray | None, dict | None]:
    """The directions of --directions (module docstring of `landscape.surface.__main__`).

    Args:
        args: the parsed command line.
        model: CKPT's model.
        data: the measured data (the hessian kind's operator; `landscape.inputs.CliData`).
        device: where the model is.

    Returns:
        (directions, metadata, the projected trajectory for pca or None, the other endpoint's weights for
        interp or None).
    """
    from landscape.surface import eigen_directions, parameters_of, pca_directions, random_directions

    kind, meta = args.directions, {"directions": args.directions}
    if kind == "random":
        dirs = random_directions(model, args.dims, seed=args.seed, norm=args.norm,
                                 include_bias_norm=args.include_bias_norm)
        meta.update(norm=args.norm, include_bias_norm=args.include_bias_norm, seed=args.seed)
        return dirs, meta, None, None
    if kind == "hessian":
        from landscape.data import part_slice
        from landscape.hessian import HessianOperator, top_eigenpairs

        batches = data.batches(part_slice(data.n, distributed.rank(), distributed.world_size()), args.batch_size)
        op = HessianOperator(model, data.loss_fn, batches, seed=args.seed, max_memory=args.max_memory)
        top = top_eigenpairs(op, k=args.dims, seed=args.seed)
        meta.update(eigenvalues=top.eigenvalues.tolist(), residuals=top.residuals.tolist(),
                    converged=top.converged, seed=args.seed)
        return eigen_directions(model, top.eigenvectors, op.param_names), meta, None, None
    if kind == "interp":
        b = other_weights(args.to, args, device, model)
        from landscape.surface import difference

        meta.update(to=str(args.to))
        return [difference(parameters_of(model), b)], meta, None, b
    if kind == "file":
        return file_directions(args, model), {**meta, "file": str(args.direction_file)}, None, None
    if data.loss_fn is None:
        raise LandscapeError("--directions pca reads landscape checkpoints (RUN_DIR/epochs), not HF model directories")
    files = trajectory_files(args.trajectory, args.dims)
    final = parameters_of(model)
    points = [other_weights(str(f), args, device, model) for f in files]
    moving = [p for p in points if any(not torch.equal(p[k], final[k]) for k in final)]
    if len(moving) < args.dims + 1:
        raise LandscapeError(f"--trajectory {args.trajectory}: {len(moving)} checkpoints differ from {args.ckpt}; "
                             f"{args.dims} PCA direction(s) need at least {args.dims + 1}")
    pca = pca_directions([*moving, final], n=args.dims)
    meta.update(explained_variance_ratio=pca.explained_variance_ratio.tolist(),
                trajectory_files=[f.name for f in files])
    return pca.directions, meta, pca.coords, None
