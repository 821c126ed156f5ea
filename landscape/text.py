"""Text for language models, offline: the Python installation's own standard-library sources as byte tokens.

The corpus is every `*.py` file under the standard library directory (`sysconfig.get_paths()["stdlib"]`,
`site-packages` excluded, so installed packages do not change it), in sorted order of relative path, each
file's bytes followed by a newline. Tokens are bytes: a byte-level vocabulary of 256 ids (`VOCAB`), which a
model with a larger vocabulary (GPT-2's 50,257) simply never sees beyond id 255.

Splits are by file, so no window mixes them: a file is in "test" when the first byte of sha256(its relative
path) is below 26 (about 10% of the files), else in "train". `token_windows(n, length, split, seed)` draws n
windows of `length` consecutive tokens at offsets from a seeded generator: the same installation, split, seed
and sizes always give the same tensor. `corpus_info` names what was read (Python version, file count, bytes,
sha256 of the split's stream), so a result states its text exactly.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError

VOCAB = 256
"""Byte-level vocabulary size."""
SPLITS = ("train", "test")
_TEST_BELOW = 26


@dataclass(frozen=True)
class CorpusInfo:
    """What a split's token stream was built from.

    Attributes:
        root: the directory read.
        python: the Python version whose sources these are.
        split: "train" or "test".
        files: the number of files in the split.
        tokens: the stream's length in bytes.
        sha256: hex digest of the stream.
    """

    root: str
    python: str
    split: str
    files: int
    tokens: int
    sha256: str


def _root(root: str | Path | None) -> Path:
    path = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise LandscapeError(f"text root {path} is not a directory")
    return path


def _in_split(relative: str, split: str) -> bool:
    test = hashlib.sha256(relative.encode()).digest()[0] < _TEST_BELOW
    return test == (split == "test")


def corpus(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, CorpusInfo]:
    """The split's token stream (uint8 bytes) and what it was built from.

    Args:
        split: "train" or "test".
        root: the directory of `*.py` files (default: this Python's standard library).

    Returns:
        (stream [n_tokens] uint8, CorpusInfo). A split without files is a LandscapeError.
    """
    if split not in SPLITS:
        raise LandscapeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    base = _root(root)
    files = sorted((p for p in base.rglob("*.py") if "site-packages" not in p.relative_to(base).parts),
                   key=lambda p: p.relative_to(base).as_posix())
    chosen = [p for p in files if _in_split(p.relative_to(base).as_posix(), split)]
    if not chosen:
        raise LandscapeError(f"no *.py files of the {split} split under {base}")
    stream = b"".join(p.read_bytes() + b"\n" for p in chosen)
    info = CorpusInfo(str(base), platform.python_version(), split, len(chosen), len(stream),
                      hashlib.sha256(stream).hexdigest())
    return np.frombuffer(stream, dtype=np.uint8), info


def token_windows(n: int, length: int, *, split: str = "train", seed: int = 0,
                  root: str | Path | None = None) -> Tensor:
    """n windows of `length` consecutive byte tokens from the split, at seeded random offsets.

    Args:
        n: windows (rows).
        length: tokens per window.
        split: "train" or "test".
        seed: the offsets' generator seed.
        root: as in `corpus`.

    Returns:
        int64 tensor [n, length] of ids in [0, 256).
    """
    if n < 1 or length < 1:
        raise LandscapeError(f"token_windows needs n ≥ 1 and length ≥ 1, got n={n}, length={length}")
    stream, info = corpus(split, root)
    if info.tokens < length:
        raise LandscapeError(f"the {split} split holds {info.tokens} tokens, fewer than one window of {length}")
    offsets = torch.randint(0, info.tokens - length + 1, (n,), generator=torch.Generator().manual_seed(seed))
    index = offsets[:, None].numpy() + np.arange(length)[None, :]
    return torch.from_numpy(stream[index].astype(np.int64))


def corpus_info(split: str = "train", root: str | Path | None = None) -> dict:
    """`CorpusInfo` of the split as a plain dict (for a result's provenance).

    Args:
        split: "train" or "test".
        root: as in `corpus`.

    Returns:
        The dict of the dataclass's fields.
    """
    return asdict(corpus(split, root)[1])
