"""Small file I/O every other module shares: atomic writes, JSON with non-finite values, JSON lines, NPZ.

Foundation layer. Every writer goes through `atomic_write`: a reader sees the old file or the new one,
never a partial one. JSON is strict (`allow_nan=False`): a non-finite float is written as `null` and
read back as `None` (callers that want NaN convert), so every file parses in any JSON reader.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a fresh temp file beside `path`, fsync it, then `os.replace` it over `path`:
    readers see the old file or the new one, never a partial one; on error the temp file is removed.

    Args:
        path: the final file.
        mode: the open mode ("wb" or "w"; the temp file is opened exclusively).

    Returns:
        A context manager yielding the open temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Delete the temp files `atomic_write` left in `directory` when its process was killed mid-write
    (`.<name>.<pid>.<hex>.tmp` of a pid that is no longer running); returns what was removed.

    Args:
        directory: where to look.

    Returns:
        The removed files.
    """
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        m = re.fullmatch(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp", tmp.name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy: non-finite floats → None, numpy/torch scalars and arrays → Python numbers and
    lists, tuples → lists, Paths → str, mapping keys → str. Anything else is returned as it is.

    Args:
        obj: any value.

    Returns:
        The copy.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars/arrays, torch tensors
    if callable(tolist):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return jsonable(obj.tolist())
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON of `jsonable(obj)`: never writes NaN/Infinity tokens.

    Args:
        obj: any value `jsonable` accepts.
        indent: JSON indentation (None: one line).

    Returns:
        The JSON text.
    """
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: PathLike, obj: Any, indent: int | None = 1, digits: int | None = None) -> Path:
    """Atomically write `obj` as strict JSON (non-finite floats as null) with a trailing newline; with `digits`,
    every float rounded to that many significant digits (compact records).

    Args:
        path: the file.
        obj: the value.
        indent: JSON indentation.
        digits: significant digits of every float (None: full precision).

    Returns:
        The path.
    """
    text = dumps(obj, indent)
    if digits is not None:
        text = json.dumps(json.loads(text, parse_float=lambda t: float(f"{float(t):.{digits}g}")), indent=indent)
    text += "\n"
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def read_json(path: PathLike) -> Any:
    """The JSON value of a file.

    Args:
        path: the file.

    Returns:
        The parsed value.
    """
    return json.loads(Path(path).read_text())


def write_jsonl(path: PathLike, rows: Iterable[Any]) -> Path:
    """Atomically (re)write a JSON-lines file, one strict-JSON object per line.

    Args:
        path: the file.
        rows: the objects, one per line.

    Returns:
        The path.
    """
    text = "".join(dumps(r) + "\n" for r in rows)
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def append_jsonl(path: PathLike, rows: Iterable[Any]) -> None:
    """Append rows to a JSON-lines file and fsync: a crash loses at most a torn last line, which
    `read_jsonl` skips.

    Args:
        path: the file (created with its directory when missing).
        rows: the objects, one per line.
    """
    text = "".join(dumps(r) + "\n" for r in rows)
    if not text:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list:
    """Every complete line of a JSON-lines file; a torn (unparsable) last line is ignored, a bad line
    elsewhere raises `ValueError` naming the file and line.

    Args:
        path: the file.

    Returns:
        The parsed rows.
    """
    lines = Path(path).read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON ({e.msg})") from None
    return rows


def write_npz(path: PathLike, **arrays: Any) -> Path:
    """Atomically write arrays to an uncompressed `.npz` (numpy arrays, tensors or lists).

    Args:
        path: the file.
        **arrays: name → array.

    Returns:
        The path.
    """
    import numpy as np

    out = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in arrays.items()}
    with atomic_write(path) as f:
        np.savez(f, **out)
    return Path(path)
