"""User-facing errors: the exception for bad input and the one-line form every message is shown in.

Foundation layer: imports nothing from landscape. The CLI wrapper that turns a `LandscapeError` into
`error: <line>` and exit status 2 lives in `landscape.cli`.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """Bad input the user can fix: the message is one line that names the problem."""


class NonFiniteError(LandscapeError):
    """Weights, inputs, loss or products hold NaN or inf (a diverged model: callers measuring during training
    record NaN instead of stopping)."""


def first_line(e: BaseException | str, limit: int | None = 300) -> str:
    """The first non-empty line of an exception's message (or of a string), cut to `limit` characters.

    An exception with an empty message gives its type name, so the result is never empty for an exception.

    Args:
        e: an exception or a string.
        limit: the largest length (None: no cut; a cut line ends with "...").

    Returns:
        The line.
    """
    text = str(e).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line and isinstance(e, BaseException):
        line = type(e).__name__
    if limit is not None and len(line) > limit:
        line = line[: max(limit - 3, 0)] + "..."
    return line


def resolve_device(name: str = "auto"):
    """`auto` → CUDA when present, else CPU; asking for CUDA without a GPU is a `LandscapeError`.

    Args:
        name: "auto", "cpu", "cuda", "cuda:N", "mps", ...

    Returns:
        The torch.device.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise LandscapeError(f"unknown device {name!r}: {first_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev
