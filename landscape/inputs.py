"""What a measuring CLI reads (`python -m landscape.hessian`, `python -m landscape.surface`): the model (from a
checkpoint, or `--model module:function` + its weights file), the data set, and a check that the model runs
on that data — each failure one `LandscapeError` line.

Foundation layer: it loads `landscape.data` and `landscape.checkpoint`; the engines never import it. A weights
file goes through the checkpoint loader's checks (`landscape.checkpoint.read_file`: missing, a directory,
empty, truncated or corrupt, a pickle that would import code), then non-finite weights and a state_dict that
does not fit the model (missing and unexpected keys, the first shape mismatches) are refused before any
compute.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line

DATA_KEYS = ("name", "split", "n_samples", "root", "seed", "normalize")


def user_model(spec: str, path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device` with the file's weights, the file's meta or {})."""
    from landscape.checkpoint import FORMAT, nonfinite_tensors, read_file, state_mismatch

    module, _, name = spec.partition(":")
    if not module or not name:
        raise LandscapeError(f"--model must look like module:function, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise LandscapeError(f"--model {spec}: {first_line(e)}") from None
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001 - the user's function: any failure is their input problem
        raise LandscapeError(f"--model {spec}: calling {name}() failed ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    payload = read_file(path, map_location=device)
    meta: dict = {}
    state = payload
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
        state = payload.get("model_state")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise LandscapeError(f"checkpoint {path}: not a state_dict (a {type(state).__name__})")
    problem = nonfinite_tensors(state)
    if problem:
        raise LandscapeError(f"checkpoint {path}: non-finite weights in {problem}")
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise LandscapeError(f"checkpoint {path}: weights do not fit --model {spec}: {problem}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise LandscapeError(f"checkpoint {path}: weights do not fit --model {spec} ({first_line(e)})") from None
    return model.to(device).eval(), meta


def load_inputs(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, Tensor, Tensor, dict, str]:
    """(model, X, y, data spec, model name) from the command line; the spec's "split_samples" is the size of
    the whole split (what --n-samples can reach)."""
    from landscape.checkpoint import load_checkpoint
    from landscape.data import load_data

    if args.model:
        model, meta = user_model(args.model, Path(args.ckpt), device)
        label = args.model
    else:
        model, meta = load_checkpoint(args.ckpt, map_location=device)
        label = str((meta.get("model") or {}).get("name", "model"))
    spec = dict(meta.get("data") or {})
    if args.data:
        spec = {"name": args.data, "n_samples": spec.get("n_samples") if spec.get("name") == args.data else None}
    if not spec.get("name"):
        raise LandscapeError("no data set: the checkpoint names none, give --data")
    if args.data_root:
        spec["root"] = args.data_root
    spec["split"] = args.split or "train"
    spec = {k: v for k, v in spec.items() if k in DATA_KEYS}
    data = load_data(**spec, device=device)
    X, y = data.X, data.y
    if args.n_samples is not None:
        if not 1 <= args.n_samples <= len(y):
            raise LandscapeError(f"--n-samples must be in 1..{len(y)} for this split, got {args.n_samples}")
        X, y = X[: args.n_samples], y[: args.n_samples]
    check_model_on_data(model, X, y, label, spec["name"])
    return model, X, y, {**spec, "split_samples": len(data.y)}, label


def check_model_on_data(model: nn.Module, X: Tensor, y: Tensor, label: str, data_name: str) -> None:
    """Run the model and the loss on two samples; a failure is one line naming the model, the input shape
    and torch's message."""
    x, t = X[:2], y[:2]
    where = f"model {label} on {data_name} inputs of shape {list(X.shape[1:])}"
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's model on this data is an input problem
        raise LandscapeError(f"{where} fails: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(out, Tensor):
        raise LandscapeError(f"{where} returns a {type(out).__name__}, not a tensor of logits [N, classes]")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise LandscapeError(f"{where} returns shape {list(out.shape)} for {x.shape[0]} samples, not logits "
                             f"[{x.shape[0]}, classes]")
    try:
        with torch.no_grad():
            F.cross_entropy(out, t)
        if int(y.max()) >= out.shape[1]:
            raise IndexError(f"target {int(y.max())} is out of bounds for {out.shape[1]} classes")
    except Exception as e:  # noqa: BLE001 - as above: the loss on this model's output
        raise LandscapeError(f"{where}: the cross-entropy loss fails on its output {list(out.shape)}: "
                             f"{type(e).__name__}: {first_line(e)}") from None
