"""User-facing errors and the CLI wrapper that turns them into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class LandscapeError(Exception):
    """Bad input the user can fix: the message is one line that names the problem."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI entry point; a `LandscapeError` prints `error: <message>` to stderr and returns 2.

    argparse's own usage errors already exit 2. Anything else is a bug and keeps its traceback.
    """
    try:
        return int(main(argv) or 0)
    except LandscapeError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def resolve_device(name: str = "auto"):
    """`auto` → CUDA when present, else CPU; asking for CUDA without a GPU is a `LandscapeError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise LandscapeError(f"unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev
