"""The one on-disk spectrum format: OUT/spectrum.json (summary) + OUT/spectrum.npz (arrays), schema 1.

spectrum.json (strict JSON; a non-finite number is written as null):
    "schema": 1, the summary of `SpectralDensity.to_dict` (lambda_max, lambda_min, trace, trace_stderr,
    negative_ratio, degenerate_ratio, eps, outliers, n_params, iters, "vectors" (SLQ random vectors),
    and the error bars when the solver reports them: lambda_max_stderr, negative_ratio_stderr, ...),
    top_eigenvalues / top_residuals / top_converged (empty / null when no top-k ran), lambda_max_residual
    (the top Ritz pair's residual norm, bounding |θ − λmax|; null without top-k), sigma, grid,
    density, the SLQ run's memory plan (reorth, basis_bytes, basis_budget, basis_device, ritz_rows,
    regenerated_products, ghosts) and whatever run metadata the writer passes (operator, n_samples, ...).
spectrum.npz:
    schema (int), nodes and weights [vectors, iters] (SLQ Ritz values and quadrature weights), dim,
    grid and density (the broadened density), top_eigenvalues and top_residuals [k].

`read_spectrum(dir)` returns plain data (a dict of numbers, strings, lists and numpy arrays, no engine
object), so plotting code can take it without importing any engine. docs/formats.md documents the files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from landscape.errors import LandscapeError
from landscape.io import read_json, write_json, write_npz

SCHEMA = 1
JSON_NAME = "spectrum.json"
NPZ_NAME = "spectrum.npz"
ARRAYS = ("nodes", "weights", "grid", "density", "top_eigenvalues", "top_residuals")


def spectrum_record(sd: Any, *, eps: float = 1e-3, sigma: float | None = None, top: Any = None,
                    meta: dict | None = None) -> tuple[dict, dict]:
    """(the spectrum.json dict, the spectrum.npz arrays) of a `SpectralDensity` `sd` and optional
    `Eigenpairs` `top`; `meta` adds run metadata to the JSON.

    Args:
        sd: the density.
        eps: the relative threshold of the summary's masses.
        sigma: the broadening of the stored density (None: the default).
        top: top eigenpairs to store beside it.
        meta: run metadata.

    Returns:
        (JSON dict, arrays).
    """
    summary = dict(sd.to_dict(eps, sigma=sigma))
    nodes = np.asarray(summary.pop("nodes", sd.nodes), dtype=np.float64)
    weights = np.asarray(summary.pop("weights", sd.weights), dtype=np.float64)
    summary["vectors"] = int(summary.get("vectors", nodes.shape[0]))
    if top is not None:
        summary["top_eigenvalues"] = np.asarray(top.eigenvalues, dtype=np.float64).tolist()
        summary["top_residuals"] = np.asarray(top.residuals, dtype=np.float64).tolist()
        summary["top_converged"] = bool(top.converged)
    else:
        summary.setdefault("top_eigenvalues", [])
        summary.setdefault("top_residuals", [])
        summary.setdefault("top_converged", None)
    residual = summary.get("lambda_max_residual")
    if summary["top_residuals"] and not (isinstance(residual, float) and math.isfinite(residual)):
        summary["lambda_max_residual"] = summary["top_residuals"][0]  # the top Ritz pair's ‖Hu − θu‖
    record = {"schema": SCHEMA, **summary, **(meta or {})}
    arrays = {
        "schema": np.int64(SCHEMA),
        "nodes": nodes,
        "weights": weights,
        "dim": np.int64(sd.dim),
        "grid": np.asarray(record["grid"], dtype=np.float64),
        "density": np.asarray(record["density"], dtype=np.float64),
        "top_eigenvalues": np.asarray(record["top_eigenvalues"], dtype=np.float64),
        "top_residuals": np.asarray(record["top_residuals"], dtype=np.float64),
    }
    return record, arrays


def write_spectrum(out_dir: str | os.PathLike, sd: Any, *, eps: float = 1e-3, sigma: float | None = None,
                   top: Any = None, meta: dict | None = None) -> dict:
    """Write OUT/spectrum.npz then OUT/spectrum.json atomically; returns the JSON dict.

    Args:
        out_dir: the spectrum directory.
        sd: the density.
        eps: the relative threshold of the summary's masses.
        sigma: the broadening of the stored density (None: the default).
        top: top eigenpairs to store beside it.
        meta: run metadata.

    Returns:
        The JSON dict.
    """
    out = Path(out_dir)
    record, arrays = spectrum_record(sd, eps=eps, sigma=sigma, top=top, meta=meta)
    write_npz(out / NPZ_NAME, **arrays)
    write_json(out / JSON_NAME, record)
    return record


def read_spectrum(path: str | os.PathLike) -> dict:
    """A spectrum directory (or its spectrum.json) as plain data: the JSON's keys (null stays None) with the
    NPZ's arrays (nodes, weights, grid, density, top_eigenvalues, top_residuals as numpy arrays; dim an
    int). A LandscapeError names a missing file or an unknown schema.

    Args:
        path: the directory or its spectrum.json.

    Returns:
        The spectrum dict.
    """
    path = Path(path)
    directory = path.parent if path.name == JSON_NAME else path
    json_path, npz_path = directory / JSON_NAME, directory / NPZ_NAME
    for p in (json_path, npz_path):
        if not p.is_file():
            raise LandscapeError(f"{p}: no such file (a spectrum directory holds {JSON_NAME} and {NPZ_NAME})")
    try:
        record = read_json(json_path)
    except ValueError as e:
        raise LandscapeError(f"{json_path}: not JSON ({e})") from None
    if not isinstance(record, dict):
        raise LandscapeError(f"{json_path}: not a spectrum (a {type(record).__name__})")
    schema = record.get("schema")
    if schema != SCHEMA:
        raise LandscapeError(f"{json_path}: spectrum schema {schema!r} is not supported (this landscape reads "
                             f"schema {SCHEMA})")
    out = dict(record)
    try:
        with np.load(npz_path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise LandscapeError(f"{npz_path}: cannot read ({e})") from None
    for key in ARRAYS:
        if key in arrays:
            out[key] = np.asarray(arrays[key], dtype=np.float64)
    out["dim"] = int(arrays.get("dim", out.get("n_params", 0)))
    return out
