"""What a measuring CLI reads (`python -m landscape.hessian`, `python -m landscape.surface`): the model (from a
checkpoint, `--model module:function` + its weights file, or a local HF model directory), the data set (a named
one, or for an HF model token ids from --tokens or --text + --tokenizer), and a check that the model runs on
that data — each failure one `LandscapeError` line. Nothing is downloaded: HF files are read with
`local_files_only=True` under HF_HUB_OFFLINE=1, so a missing file is an error, never a fetch.

Foundation layer: it loads `landscape.data` and `landscape.checkpoint`; the engines never import it. A weights
file goes through the checkpoint loader's checks (`landscape.checkpoint.read_file`: missing, a directory,
empty, truncated or corrupt, a pickle that would import code), then non-finite weights and a state_dict that
does not fit the model (missing and unexpected keys, the first shape mismatches) are refused before any
compute.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line

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


def is_hf_dir(path: str | Path) -> bool:
    """Is `path` a local HF model directory (the `save_pretrained` layout: a directory with config.json)?

    Args:
        path: a path.

    Returns:
        True for such a directory.
    """
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def hf_model(path: str | Path, device: torch.device) -> nn.Module:
    """The model saved in the HF directory `path` (its config's architecture class, weights from safetensors),
    in eval mode on `device`. Nothing is downloaded: a missing file is one line, not a fetch.

    Args:
        path: a `save_pretrained` directory.
        device: where the model goes.

    Returns:
        The model (non-finite weights are refused).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from landscape.checkpoint import nonfinite_tensors

    transformers.utils.logging.disable_progress_bar()  # stderr is for one-line errors and our own progress

    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LandscapeError(f"{path}: not a loadable HF model directory ({first_line(e)})") from None
    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None:
        raise LandscapeError(f"{path}/config.json names no transformers architecture ({names or 'none'}); "
                             "save the model with model.save_pretrained(DIR)")
    try:
        model = cls.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise LandscapeError(f"{path}: cannot load the weights without a download ({first_line(e)})") from None
    problem = nonfinite_tensors(model.state_dict())
    if problem:
        raise LandscapeError(f"{path}: non-finite weights in {problem}")
    return model.to(device).eval()


def _token_file(path: Path) -> tuple[Tensor, Tensor | None]:
    """(ids, attention_mask or None) from a .npy integer array or a torch file (weights_only) holding a tensor or
    a dict with "input_ids" (and optionally "attention_mask")."""
    from landscape.checkpoint import read_file

    if path.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False)), None
        except (OSError, ValueError) as e:
            raise LandscapeError(f"--tokens {path}: cannot read it ({first_line(e)})") from None
    try:
        raw = read_file(path)
    except LandscapeError as e:
        raise LandscapeError(str(e).replace("checkpoint ", "--tokens ", 1)) from None
    if isinstance(raw, dict) and isinstance(raw.get("input_ids"), Tensor):
        mask = raw.get("attention_mask")
        return raw["input_ids"], mask if isinstance(mask, Tensor) else None
    if isinstance(raw, Tensor):
        return raw, None
    raise LandscapeError(f"--tokens {path}: expected a tensor of token ids or a dict with 'input_ids', "
                         f"got {type(raw).__name__}")


def _text_tokens(text: Path, tokenizer: Path) -> Tensor:
    """The text file's ids under the local tokenizer directory (no special tokens added; nothing downloaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    if not text.is_file():
        raise LandscapeError(f"--text {text}: no such file")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    except (OSError, ValueError) as e:
        raise LandscapeError(f"--tokenizer {tokenizer}: not a local tokenizer directory ({first_line(e)})") from None
    ids = tok(text.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def _check_lm_flags(args: argparse.Namespace) -> None:
    """The data flags of an HF model directory, checked before anything loads."""
    if args.model or args.data:
        raise LandscapeError("--model and --data do not apply to an HF model directory; give --tokens or --text")
    if bool(args.text) != bool(args.tokenizer):
        raise LandscapeError("--text FILE and --tokenizer DIR go together")
    if bool(args.tokens) == bool(args.text):
        raise LandscapeError("an HF model directory needs its data: --tokens FILE, or --text FILE --tokenizer DIR")


def token_rows(args: argparse.Namespace, vocab: int) -> tuple[Tensor, Tensor | None, dict]:
    """(ids [N, T] int64, attention mask [N, T] or None, data spec) from --tokens FILE or --text FILE --tokenizer DIR:
    a 1-D stream is cut into rows of --seq-len tokens (the remainder dropped); --n-samples keeps the first rows.

    Args:
        args: the CLI's namespace (tokens, text, tokenizer, seq_len, n_samples).
        vocab: the model's vocabulary size (ids must lie in [0, vocab)).

    Returns:
        The rows, their mask, and {"tokens" or "text"/"tokenizer", "rows", "seq_len"}.
    """
    _check_lm_flags(args)
    if args.tokens:
        ids, mask = _token_file(Path(args.tokens))
        spec: dict = {"tokens": str(args.tokens)}
    else:
        ids, mask = _text_tokens(Path(args.text), Path(args.tokenizer)), None
        spec = {"text": str(args.text), "tokenizer": str(args.tokenizer)}
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.dim() not in (1, 2):
        raise LandscapeError(f"token ids must be an integer array of 1 or 2 dimensions, got {ids.dtype} "
                             f"of shape {list(ids.shape)}")
    ids = ids.to(torch.int64)
    if ids.dim() == 1:
        length = args.seq_len or 128
        ids = ids[: ids.numel() // length * length].reshape(-1, length)
    elif args.seq_len and args.seq_len != ids.shape[1]:
        raise LandscapeError(f"--seq-len {args.seq_len} cuts a 1-D token stream; these rows are {ids.shape[1]} long")
    if ids.numel() == 0:
        raise LandscapeError("no complete row of tokens (fewer tokens than --seq-len)")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise LandscapeError(f"token ids span [{int(ids.min())}, {int(ids.max())}], outside the model's vocabulary "
                             f"[0, {vocab})")
    if mask is not None and mask.shape != ids.shape:
        raise LandscapeError(f"attention_mask has shape {list(mask.shape)}, input_ids {list(ids.shape)}")
    if args.n_samples is not None:
        if not 1 <= args.n_samples <= len(ids):
            raise LandscapeError(f"--n-samples must be in 1..{len(ids)} rows of tokens, got {args.n_samples}")
        ids, mask = ids[: args.n_samples], None if mask is None else mask[: args.n_samples]
    return ids, mask, {**spec, "rows": len(ids), "seq_len": int(ids.shape[1])}


def load_lm_inputs(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, Tensor, Tensor | None, dict]:
    """(model, ids [N, T], mask or None, data spec) for an HF model directory CKPT and its token data; the model's
    own loss is the objective. --model and --data do not apply.

    Args:
        args: the parsed command line.
        device: where the model and data go.

    Returns:
        (model, ids, mask, data spec).
    """
    _check_lm_flags(args)
    model = hf_model(args.ckpt, device)
    vocab = int(getattr(model.config, "vocab_size", 0) or 0) or model.get_output_embeddings().weight.shape[0]
    ids, mask, spec = token_rows(args, vocab)
    try:
        with torch.no_grad():
            model(input_ids=ids[:1].to(device), **({} if mask is None else {"attention_mask": mask[:1].to(device)}))
    except Exception as e:  # noqa: BLE001 - any failure of the model on these tokens is an input problem
        raise LandscapeError(f"model {args.ckpt} on token rows of length {ids.shape[1]} fails: "
                             f"{type(e).__name__}: {first_line(e)}") from None
    return model, ids.to(device), None if mask is None else mask.to(device), spec


def lm_batches(ids: Tensor, mask: Tensor | None, batch_size: int) -> list[dict]:
    """Dict batches {"input_ids"[, "attention_mask"]} of at most `batch_size` rows.

    Args:
        ids: [N, T] token ids.
        mask: [N, T] attention mask, or None.
        batch_size: rows per batch.

    Returns:
        The batches.
    """
    rows = ids.split(batch_size)
    masks = [None] * len(rows) if mask is None else mask.split(batch_size)
    return [{"input_ids": i, **({} if m is None else {"attention_mask": m})} for i, m in zip(rows, masks)]


def add_lm_flags(p: argparse.ArgumentParser) -> None:
    """The flags of an HF model directory's data (shared by the hessian and surface CLIs).

    Args:
        p: the parser.
    """
    p.add_argument("--tokens", metavar="FILE", help="HF model directory: token ids, .pt (a tensor or a dict with "
                   "input_ids[, attention_mask]; read with weights_only) or .npy, [rows, seq] or a 1-D stream")
    p.add_argument("--text", metavar="FILE", help="HF model directory: a UTF-8 text file, tokenized by --tokenizer")
    p.add_argument("--tokenizer", metavar="DIR", help="a local tokenizer directory (save_pretrained layout)")
    p.add_argument("--seq-len", type=int, metavar="T", help="cut a 1-D token stream into rows of T tokens "
                   "(default 128)")


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
