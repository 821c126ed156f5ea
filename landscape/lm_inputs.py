"""What a measuring CLI reads for a local HF model directory (`save_pretrained` layout): the model, and its token
data from --tokens FILE (.npy, or a torch file read with weights_only) or --text FILE --tokenizer DIR, cut into
rows and checked against the vocabulary; each failure one `LandscapeError` line. Nothing is downloaded: HF files
are read with `local_files_only=True` under HF_HUB_OFFLINE=1, so a missing file is an error, never a fetch.
Foundation layer, like the classification path (checkpoints, `--model`, named data sets) in `landscape.inputs`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError, first_line


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
