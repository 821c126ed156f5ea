"""Self-describing checkpoints: atomic writes, `weights_only` reads, one-line errors.

A checkpoint is a `torch.save`d dict that rebuilds its own model:
    {"format": "landscape-checkpoint", "version": 1,
     "meta": {"model": build_spec, "data": data spec, "epoch": int, ...},   # JSON-able
     "model_state": state_dict, "optimizer_state": state_dict | None,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "python": tuple, "numpy": tuple}, "extra": dict}
It is read with `torch.load(weights_only=True)`, so a file that tries to import anything is refused
before any of its code runs.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape.errors import LandscapeError, first_line
from landscape.io import atomic_write, remove_stale_temp_files  # noqa: F401 - re-exported

FORMAT = "landscape-checkpoint"
VERSION = 1


class CheckpointError(LandscapeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, meta: dict,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None) -> Path:
    """Write model, optimizer and RNG states with `meta` atomically (temp file, fsync, os.replace).

    meta must be JSON-able; `meta["model"]` defaults to `model.build_spec` (set by `landscape.models.build`).

    Args:
        path: the file to write.
        model: the model whose state_dict is saved.
        meta: JSON-able metadata (data spec, epoch, step, ...).
        optimizer: its state is saved too when given.
        extra: further tensors/objects (generator states, ...), loaded with weights_only=True.

    Returns:
        The path written.
    """
    path = Path(path)
    meta = dict(meta)
    if "model" not in meta:
        if not isinstance(getattr(model, "build_spec", None), dict):
            raise LandscapeError("model has no build_spec: build it with landscape.models.build "
                                 "or pass meta['model'] = {'name': ..., 'config': {...}}")
        meta["model"] = model.build_spec
    try:
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise LandscapeError(f"checkpoint meta must be JSON-able: {e}") from None
    payload = {"format": FORMAT, "version": VERSION, "meta": meta, "model_state": model.state_dict(),
               "optimizer_state": None if optimizer is None else optimizer.state_dict(),
               "rng": rng_state(), "extra": extra or {}}
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


    return True


def load_training_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint's full payload (meta, model/optimizer state, rng, extra).

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded.

    Returns:
        The payload dict {"format", "version", "meta", "model_state", "optimizer_state", "rng", "extra"}.
    """
    path = Path(path)
    payload = read_file(path, map_location)
    if not isinstance(payload, dict) or not _is(payload.get("format"), FORMAT):
        what = f"a {type(payload).__name__}"
        if isinstance(payload, dict):
            tensors = payload and all(isinstance(v, torch.Tensor) for v in payload.values())
            what = "a plain state_dict" if tensors else f"{what} with keys {_keys(payload)}"
        raise CheckpointError(f"checkpoint {path}: not a landscape checkpoint ({what}); "
                              "write one with landscape.save_checkpoint")
    if not _is(payload.get("version"), VERSION):
        version = payload.get("version")
        shown = repr(version) if isinstance(version, (int, float, str, type(None))) else type(version).__name__
        raise CheckpointError(f"checkpoint {path}: format version {shown[:40]} is not "
                              f"supported (this landscape reads version {VERSION})")
    meta = payload.get("meta")
    spec = meta.get("model") if isinstance(meta, dict) else None
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
            and isinstance(spec.get("config"), dict)):
        raise CheckpointError(f"checkpoint {path}: meta has no model build spec "
                              "{'name': ..., 'config': {...}}")
    if not isinstance(payload.get("model_state"), dict):
        raise CheckpointError(f"checkpoint {path}: model_state is missing")
    return payload


def read_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> object:
    """`torch.load(weights_only=True)` of any file (a checkpoint or a bare state_dict) with one-line
    `CheckpointError`s: missing, a directory, empty, refused (a pickle that imports code), corrupt.

    Args:
        path: the file.
        map_location: where tensors are loaded.

    Returns:
        The unpickled object.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: file is empty")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path}: {_unpickling_problem(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of a file on disk means a damaged file
        raise CheckpointError(f"checkpoint {path}: corrupt or truncated file "
                              f"({type(e).__name__}: {first_line(e)})") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    allow_nonfinite: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint's build spec and load its weights: (model in eval mode, meta).

    Weights or buffers holding NaN or ±inf are refused (a diverged run has no landscape to measure) unless
    `allow_nonfinite`.

    Args:
        path: the checkpoint file.
        map_location: where the weights are loaded.
        allow_nonfinite: accept NaN / ±inf weights.

    Returns:
        (model in eval mode, meta).
    """
    payload = load_training_state(path, map_location)
    if not allow_nonfinite:
        problem = nonfinite_tensors(payload["model_state"])
        if problem:
            raise CheckpointError(f"checkpoint {path}: non-finite weights ({problem}); the run diverged "
                                  "before this was saved")
    model = rebuild_model(path, payload)
    return model.to(map_location).eval(), payload["meta"]


def nonfinite_tensors(state: dict) -> str:
    """'' when every floating tensor in `state` is finite, else a one-line list of the offending entries.

    Args:
        state: a state_dict.

    Returns:
        "" or "name (n non-finite), ...".
    """
    bad = []
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append(f"{key}: {n} of {value.numel()}")
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return ", ".join(bad[:3]) + more if bad else ""


def rebuild_model(path: str | os.PathLike, payload: dict) -> nn.Module:
    """`landscape.models.build(**spec)` then a strict `load_state_dict`, with one-line errors.

    Args:
        path: the checkpoint's path, for messages.
        payload: its loaded payload (`load_training_state`).

    Returns:
        The model with the saved weights.
    """
    from landscape import models

    spec = payload["meta"]["model"]
    known = models.available()
    if spec["name"] not in known:
        raise CheckpointError(f"checkpoint {path}: unknown model {spec['name']!r} "
                              f"(known: {', '.join(known)})")
    try:
        model = models.build(spec["name"], **spec["config"])
    except Exception as e:  # noqa: BLE001 - the spec comes from the file: any failure to build is the file's
        raise CheckpointError(f"checkpoint {path}: cannot rebuild model {spec['name']!r} from its build spec "
                              f"({first_line(e)})") from None
    problem = state_mismatch(model.state_dict(), payload["model_state"])
    if problem:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the rebuilt {spec['name']!r} model: "
                              f"{problem}")
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot load its weights ({first_line(e)})") from None
    return model


def state_mismatch(expected: dict, saved: dict) -> str:
    """'' when `saved` fits `expected` exactly, else a one-line list of missing/unexpected/reshaped keys.

    Args:
        expected: the model's state_dict.
        saved: the checkpoint's.

    Returns:
        "" or the one-line description of the difference.
    """
    parts = []
    missing = [k for k in expected if k not in saved]
    unexpected = [str(k) for k in saved if k not in expected]
    not_tensors = [f"{k} ({type(saved[k]).__name__})" for k in expected
                   if k in saved and not isinstance(saved[k], torch.Tensor)]
    reshaped = [f"{k} {list(saved[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
                if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("not a tensor", not_tensors),
                         ("shape (saved vs model)", reshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def rng_state() -> dict:
    """Global RNG states: torch CPU, each CUDA device, Python `random`, NumPy (weights_only-safe types)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured (CUDA states only when the same devices exist).

    Args:
        state: {"torch", "cuda", "python", "numpy"} as captured by `rng_state`.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _is(value: object, expected: str | int) -> bool:
    """`value == expected` for values read from a file: a tensor or other odd object is simply not equal."""
    return type(value) is type(expected) and value == expected


def _unpickling_problem(message: str) -> str:
    """One line from torch's multi-line weights_only refusal."""
    # torch's wordings: "Unsupported global: GLOBAL x.y" and (blocked modules, torch ≥ 2.13)
    # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
    m = re.search(r"unsupported (?:global: )?GLOBAL (\S+?)\.?(?:\s|$)", message, re.IGNORECASE)
    if m:
        return (f"refused to load: the file imports {m.group(1)} when unpickled, which can result in "
                "arbitrary code execution (only tensors and plain containers are allowed)")
    m = re.search(r"WeightsUnpickler error:\s*(.*\S)", message)
    detail = m.group(1) if m else first_line(message)
    return f"corrupt or not a torch checkpoint file ({detail})"


def _keys(d: dict) -> str:
    keys = [str(k) for k in list(d)[:4]]
    return ", ".join(keys) + (", ..." if len(d) > 4 else "")
