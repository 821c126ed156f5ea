"""What a measuring CLI reads (`python -m landscape.hessian`, `python -m landscape.surface`): the model (from a
checkpoint, `--model module:function` + its weights file, or a local HF model directory), the data set (a named
one, or for an HF model token ids from --tokens or --text + --tokenizer), and a check that the model runs on
that data — each failure one `LandscapeError` line. Nothing is downloaded: HF files are read with
`local_files_only=True` under HF_HUB_OFFLINE=1, so a missing file is an error, never a fetch.

Foundation layer: it loads `landscape.data` and `landscape.checkpoint`; the engines never import it. A weights
file goes through the checkpoint loader's checks (`landscape.checkpoint.read_file`: missing, a directory,
empty, truncated or corrupt, a pickle that would import code), then non-finite weights and a state_dict that
does not fit the model (missing and unexpected keys, the first shape mismatches) are refused before any
compute. The HF model directory and its token data are read by `landscape.lm_inputs` (re-exported here).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line
from landscape.lm_inputs import add_lm_flags, hf_model, is_hf_dir, lm_batches, load_lm_inputs, token_rows

__all__ = ["DATA_KEYS", "CliData", "add_lm_flags", "check_model_on_data", "hf_model", "is_hf_dir", "lm_batches",
           "load_cli_inputs", "load_inputs", "load_lm_inputs", "token_rows", "user_model"]

DATA_KEYS = ("name", "split", "n_samples", "root", "seed", "normalize")


def user_model(spec: str, path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device` with the file's weights, the file's meta or {}).

    Args:
        spec: "module:function" building the model.
        path: the weights file (a checkpoint or a bare state_dict).
        device: where the model goes.

    Returns:
        (model, meta).
    """
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
    the whole split (what --n-samples can reach).

    Args:
        args: the parsed command line.
        device: where the model and data go.

    Returns:
        (model, X, y, data spec, model name).
    """
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
    and torch's message.

    Args:
        model: the model.
        X: the inputs.
        y: the labels.
        label: the model's name, for the message.
        data_name: the data set's name, for the message.

    Raises:
        LandscapeError: the forward pass or the loss failed.
    """
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


@dataclass(frozen=True)
class CliData:
    """The measured data of a CLI run: classification samples (X, y) with the cross-entropy, or token rows
    (ids, attention mask or None) with the model's own loss (loss_fn None).

    Attributes:
        loss_fn: F.cross_entropy, or None for an HF model's own loss.
        tensors: (X, y) or (ids, mask).
        n: samples or token rows.
        spec: the data's description for the output files ("split_samples": what --n-samples can reach).
    """

    loss_fn: Any
    tensors: tuple
    n: int
    spec: dict

    def whole(self) -> Any:
        """All of it in one data form the engines take: (X, y), or a dict batch of token rows."""
        if self.loss_fn is not None:
            return self.tensors
        ids, mask = self.tensors
        return {"input_ids": ids, **({} if mask is None else {"attention_mask": mask})}

    def batches(self, part: slice, batch_size: int | None) -> list:
        """The rows in `part` as batches of `batch_size` (default 500 samples, or 8 token rows).

        Args:
            part: the rows of this process (a slice of the samples).
            batch_size: rows per batch (None: the default).

        Returns:
            The batches ((X, y) tuples, or token dicts).
        """
        if self.loss_fn is None:
            ids, mask = self.tensors
            return lm_batches(ids[part], None if mask is None else mask[part], batch_size or 8)
        X, y = self.tensors
        size = batch_size or 500
        return list(zip(X[part].split(size), y[part].split(size)))


def load_cli_inputs(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, CliData, str]:
    """(model, its data, model label): an HF model directory CKPT on token rows, else `load_inputs`.

    Args:
        args: the parsed command line.
        device: where the model and data go.

    Returns:
        (model, data, label).
    """
    if is_hf_dir(args.ckpt):
        model, ids, mask, spec = load_lm_inputs(args, device)
        return model, CliData(None, (ids, mask), len(ids), spec), str(args.ckpt)
    if args.tokens or args.text or args.tokenizer or args.seq_len:
        raise LandscapeError("--tokens, --text, --tokenizer and --seq-len need an HF model directory as CKPT")
    model, X, y, spec, label = load_inputs(args, device)
    return model, CliData(F.cross_entropy, (X, y), len(y), spec), label
