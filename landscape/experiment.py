"""Run an experiment grid (cells × seeds): train each run, then measure its checkpoints; resumable.

    python -m landscape.experiment experiments/orhan2018.toml                  # quick profile, runs/orhan2018
    python -m landscape.experiment experiments/oh2025.toml --profile full --device cuda --only 'vit*'
    python -m landscape.experiment experiments/liu2020.toml --list             # validate, build, list cells

A run is one cell (an architecture and setting) with one seed. It trains with `landscape.train`,
keeps `ckpt_epochNNN.pt` at the measurement epochs (epoch 0 = initialization), and then measures
each kept checkpoint: the Hessian spectrum by stochastic Lanczos quadrature, the exact spectrum of
small nets, and the probes (gradient-norm ratio, stream-vs-update statistics, singularities) on a
fixed probe set: the same `probe_samples` training samples (a fixed random subset) for every run.
Cheap probes can also run every K optimizer steps during training (`[measure.steps]`, with
`landscape.probes.make_probe_callback`: on the step's training batch, in train mode, RNG and
buffers restored), e.g. SPEC B.3's stream norms with the transition point.

Config (TOML; unknown keys are errors):

    name, description          strings; `name` gives the default output directory
    citations, notes           lists of strings (sources; which choices are [V]erified, [R]econstructed
                               or [TD] toolkit defaults): written into experiment.json and summary.json
    headline                   result keys printed (and written to summary.md) per cell; default
                               ["train_acc", "test_acc"]
    [cells.NAME]               the cells of every profile that does not list its own
    [profiles.P]               a named setup ("quick": MNIST-1D on a CPU in minutes; "full": the paper's)
      description, seeds (list, default [0]), device ("auto"), threads, target_acc (headline
      "epoch_to_target": first epoch with train accuracy ≥ target)
      train = {...}            TrainConfig keys shared by the cells (not seed/out/resume/device/threads)
      model, model_config      the default model and model options of the cells
      measure = {...}          what to measure (below)
      [profiles.P.cells.NAME]  this profile's cells: merged key by key over the top-level cell of the
                               same name (or new); `skip = true` drops a top-level cell here
    cell keys: label, note, skip, model, model_config (merged over the profile's), train (merged over the
      profile's), measure (merged section by section over the profile's), seeds, and
      sweep = {"model_config.connect" = ["scaled:0.5", "scaled:2"], "train.lr" = [...]}: one run
      directory per combination, named NAME_<value>[_<value>...] ("mode:value" strings give their
      value: "scaled:0.5" → "0.5"; characters other than letters, digits, '_', '.', '-' are dropped).
    measure keys: probe_samples (fixed probe set size, default 1000), batch_size (per pass, 1000),
      [probes]   epochs, metrics (of landscape.probes.METRICS; default grad_norm, stream, singularity)
      [spectrum] epochs, iters (80), vectors (probe vectors, 4), n_samples (default probe_samples),
                 eps (degenerate/negative threshold relative to λmax, 1e-3), seed (0)
      [exact]    epochs, n_samples, max_params (10,000: larger models are skipped, noted), eps
      [steps]    every (K optimizer steps), metrics (of landscape.probes.TRAIN_PROBES; default stream)
    epochs: "all", or a list of epoch numbers and "init" (0), "last", "every:K".

Output (`--out`, default runs/NAME for the quick profile and runs/NAME-PROFILE otherwise):

    OUT/experiment.json        resolved profile, cells, notes, citations, git commit, argv
    OUT/summary.json           per cell: label, note, setting, seeds, status counts, and for every result key
                               {"mean", "std" (sample std; null for one seed), "n", "values"} over the
                               seeds, for the final measurements ("final") and those at init ("init")
    OUT/summary.md             the headline keys as a markdown table (mean ± std)
    OUT/CELL/seedS/            one run
      cell.json                the run's resolved config (model, train, measure, setting), its hash,
                               experiment notes, git commit; a changed config refuses to resume
      config.json, metrics.jsonl, checkpoint.pt     written by landscape.train (per-epoch train/test
                               loss and accuracy; the latest checkpoint, used to resume)
      ckpt_epochNNN.pt         the model after NNN epochs at the measurement epochs (load_checkpoint)
      probes.jsonl             step probes (written by landscape.probes during training): {"step",
                               "epoch" (fractional), "block", "metric", "value"}; a diverged run's
                               go up to the failure
      measure/epochNNN.json    everything measured at epoch NNN: {"epoch", "step", "seconds",
                               "spectrum": {lambda_max, lambda_min, trace, degenerate_ratio,
                               negative_ratio, ...}, "exact": {...}, "probes": [records]}
      measure/epochNNN.npz     arrays: slq_nodes, slq_weights [vectors, iters], grid, density,
                               exact_eigenvalues (ascending)
      spectrum.jsonl           one line per measured epoch: {"epoch", "step", "spectrum", "exact"}
      epoch_probes.jsonl       probe records of every measured epoch: {"epoch", "step", "block",
                               "metric", "value"} (NaN written as null)
      result.json              status ("completed" | "diverged"), message, and the result keys at the
                               last measured epoch ("final") and at init ("init")
      done.json                written last, atomically: the run is finished and is skipped next time

Result keys: train_acc, train_loss, test_acc, test_loss (last epoch), best_train_acc, epoch_to_target,
train_seconds; slq_* and exact_* (lambda_max, lambda_min, trace, degenerate_ratio, negative_ratio);
grad_ratio_min/max/gmean over blocks and grad_gain = ‖∂L/∂x_first‖ / ‖∂L/∂x_last‖; the block means
<metric>_mean of the stream and singularity metrics and x_norm2_last (the last site's ‖x‖²);
from step probes transition_step = argmax_t ‖x‖² at the last site (SPEC B.3 [TD]) and x_norm2_peak.

Resuming: a run with done.json is skipped; otherwise training resumes from checkpoint.pt
(`landscape.train`'s resume, bit-exact on CPU), measurement epochs with a measure/epochNNN.json
are kept and the rest are measured. A non-finite training loss ends the run as "diverged": the
epochs trained so far are still measured. Ctrl-C stops at the next step boundary (exit 130).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from landscape.cli import run_cli
from landscape.data import TensorData, load_data
from landscape.errors import LandscapeError, resolve_device
from landscape.train import NonFiniteLoss, TrainConfig, git_version, load_toml, resolved_model_config, train

# input shape and class count per data set, so a config validates (and builds its models) without the data
DATA_SHAPES = {"mnist1d": ((40,), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
               "cifar100-coarse": ((3, 32, 32), 20), "svhn": ((3, 32, 32), 10)}
# train keys the runner sets itself
_RUNNER_KEYS = {"seed", "out", "resume", "device", "threads", "progress", "probes", "probe_every", "model",
                "model_config"}
_STR_LIST, _INT_LIST, _EPOCHS = "list of strings", "list of integers", "epoch list"


# ---- schema ----

def _is(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _STR_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _INT_LIST:
        return isinstance(value, list) and bool(value) and all(_is(v, int) for v in value)
    if kind == _EPOCHS:
        return isinstance(value, str) or (isinstance(value, list) and all(_is(v, int) or isinstance(v, str)
                                                                          for v in value))
    return isinstance(value, kind)


def _check(table, schema: dict, where: str, required: tuple[str, ...] = ()) -> dict:
    """`table` must be a dict whose keys are in `schema` (key → type) with values of that type."""
    if not isinstance(table, dict):
        raise LandscapeError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise LandscapeError(f"{where}: unknown key(s) {unknown}; known: {', '.join(schema)}")
    for key in required:
        if key not in table:
            raise LandscapeError(f"{where}: missing required key {key!r}")
    for key, value in table.items():
        kind = schema[key]
        if not _is(value, kind):
            name = kind if isinstance(kind, str) else {str: "a string", int: "an integer", float: "a number",
                                                           bool: "true or false", dict: "a table"}[kind]
            raise LandscapeError(f"{where}.{key} must be {name}, got {value!r}")
    return table


_TOP = {"name": str, "description": str, "citations": _STR_LIST, "notes": _STR_LIST, "headline": _STR_LIST,
        "cells": dict, "profiles": dict}
_PROFILE = {"description": str, "seeds": _INT_LIST, "device": str, "threads": int, "target_acc": float,
            "train": dict, "model": str, "model_config": dict, "measure": dict, "cells": dict}
_CELL = {"label": str, "note": str, "model": str, "model_config": dict, "train": dict, "measure": dict,
         "sweep": dict, "seeds": _INT_LIST, "skip": bool}
_MEASURE = {"probe_samples": int, "batch_size": int, "probes": dict, "spectrum": dict, "exact": dict,
            "steps": dict}
_SECTIONS = {
    "probes": {"epochs": _EPOCHS, "metrics": _STR_LIST},
    "spectrum": {"epochs": _EPOCHS, "iters": int, "vectors": int, "n_samples": int, "eps": float, "seed": int,
                 "params": _STR_LIST},
    "exact": {"epochs": _EPOCHS, "n_samples": int, "max_params": int, "eps": float, "params": _STR_LIST},
    "steps": {"every": int, "metrics": _STR_LIST},
}
_DEFAULTS = {
    "probes": {"metrics": ["grad_norm", "stream", "singularity"]},
    "spectrum": {"iters": 80, "vectors": 4, "eps": 1e-3, "seed": 0},
    "exact": {"max_params": 10_000, "eps": 1e-3},
    "steps": {"metrics": ["stream"]},
}


def parse_epochs(spec, epochs: int, where: str) -> list[int]:
    """Epoch numbers (0 = init) from "all" or (a list of) ints / "init" / "last" / "every:K"."""
    if spec == "all":
        return list(range(epochs + 1))
    out: set[int] = set()
    for item in [spec] if isinstance(spec, str) else spec:
        if _is(item, int):
            if not 0 <= item <= epochs:
                raise LandscapeError(f"{where}: epoch {item} is outside 0..{epochs}")
            out.add(item)
        elif item == "init":
            out.add(0)
        elif item == "last":
            out.add(epochs)
        elif isinstance(item, str) and re.fullmatch(r"every:[1-9]\d*", item):
            out.update(range(0, epochs + 1, int(item[6:])))
        else:
            raise LandscapeError(f"{where}: bad epoch {item!r}; use integers, 'init', 'last', 'every:K' or 'all'")
    return sorted(out)


def _merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; `over` wins."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _slug(value) -> str:
    """A sweep value in a run name: "scaled:0.5" → "0.5" (the part after ':'), 0.30 → "0.3"."""
    text = format(value, "g") if isinstance(value, float) else str(value).rpartition(":")[2]
    return re.sub(r"[^A-Za-z0-9._\-]", "", text) or "x"


# ---- the grid ----

@dataclass
class Run:
    """One cell × seed: everything needed to train and measure it."""

    cell: str
    base: str
    label: str
    note: str
    setting: dict
    seed: int
    train: TrainConfig
    measure: dict
    target_acc: float | None

    @property
    def path(self) -> str:
        return f"{self.cell}/seed{self.seed}"

    def record(self) -> dict:
        """The run's resolved config as plain data (also hashed to refuse resuming a changed run)."""
        cfg = self.train.to_dict()
        for key in ("out", "resume", "device", "threads", "progress"):
            cfg.pop(key)
        return {"cell": self.cell, "base": self.base, "label": self.label, "note": self.note,
                "setting": self.setting, "seed": self.seed, "train": cfg, "measure": self.measure,
                "target_acc": self.target_acc}


@dataclass
class Experiment:
    """A validated config with one profile resolved into runs."""

    name: str
    description: str
    citations: list[str]
    notes: list[str]
    headline: list[str]
    profile: str
    profile_description: str
    device: str
    threads: int | None
    runs: list[Run] = field(default_factory=list)

    def record(self) -> dict:
        return {"name": self.name, "description": self.description, "profile": self.profile,
                "profile_description": self.profile_description, "citations": self.citations,
                "notes": self.notes, "headline": self.headline,
                "runs": [r.record() for r in self.runs]}


def load_experiment(path: str | Path, profile: str = "quick") -> Experiment:
    """Read and validate an experiment TOML and resolve `profile` into its runs (models are not built)."""
    raw = load_toml(path)
    return resolve(raw, profile, where=Path(path).name)


def resolve(raw: dict, profile: str, where: str = "config") -> Experiment:
    """Validate the config dict and expand `profile` into runs; errors name the offending key."""
    _check(raw, _TOP, where, required=("name", "profiles"))
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", raw["name"]):
        raise LandscapeError(f"{where}: name {raw['name']!r} must be letters, digits, '_', '.', '-'")
    profiles = raw["profiles"]
    if profile not in profiles:
        raise LandscapeError(f"{where}: no profile {profile!r}; available: {', '.join(profiles) or 'none'}")
    pwhere = f"{where}: profiles.{profile}"
    prof = _check(profiles[profile], _PROFILE, pwhere)
    shared, own = raw.get("cells", {}), prof.get("cells", {})
    for table, w in ((shared, f"{where}: cells"), (own, f"{pwhere}.cells")):
        for base, cell in table.items():
            _check(cell, _CELL, f"{w}.{base}")
    cells = {base: _merge(shared.get(base, {}), own.get(base, {})) for base in {**shared, **own}}
    cells = {base: cell for base, cell in cells.items() if not cell.get("skip", False)}
    if not cells:
        raise LandscapeError(f"{pwhere}: no cells (give [cells.NAME] or [profiles.{profile}.cells.NAME])")
    base_train = prof.get("train", {})
    bad = sorted(set(base_train) & _RUNNER_KEYS)
    if bad:
        raise LandscapeError(f"{pwhere}.train: {bad} are set by the runner (use seeds, device, threads, model, "
                             "model_config)")
    base_measure = _check(prof.get("measure", {}), _MEASURE, f"{pwhere}.measure")
    exp = Experiment(raw["name"], raw.get("description", ""), raw.get("citations", []), raw.get("notes", []),
                     raw.get("headline", ["train_acc", "test_acc"]), profile, prof.get("description", ""),
                     prof.get("device", "auto"), prof.get("threads"))
    names: set[str] = set()
    for base, cell in cells.items():
        w = f"{pwhere}, cell {base}"
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", base):
            raise LandscapeError(f"{w}: cell names must be letters, digits, '_', '.', '-'")
        bad = sorted(set(cell.get("train", {})) & _RUNNER_KEYS)
        if bad:
            raise LandscapeError(f"{w}.train: {bad} are set by the runner")
        resolved = {"model": cell.get("model", prof.get("model", "fc")),
                    "model_config": _merge(prof.get("model_config", {}), cell.get("model_config", {})),
                    "train": _merge(base_train, cell.get("train", {})),
                    "measure": _merge(base_measure, cell.get("measure", {}))}
        sweep = cell.get("sweep", {})
        for key, values in sweep.items():
            head = key.split(".")[0]
            if head not in ("model", "model_config", "train") or not isinstance(values, list) or not values:
                raise LandscapeError(f"{w}.sweep: {key!r} must be model / model_config.KEY / train.KEY "
                                     "with a non-empty list of values")
        for combo in product(*sweep.values()) if sweep else [()]:
            setting = dict(zip(sweep, combo))
            spec = copy.deepcopy(resolved)
            for key, value in setting.items():
                parts = key.split(".")
                target = spec
                for p in parts[:-1]:
                    target = target.setdefault(p, {})
                target[parts[-1]] = value
            name = "_".join([base, *(_slug(v) for v in combo)])
            if name in names:
                raise LandscapeError(f"{w}: run name {name!r} occurs twice; rename the cell or sweep values")
            names.add(name)
            rwhere = w if name == base else f"{w} ({name})"
            for seed in cell.get("seeds", prof.get("seeds", [0])):
                exp.runs.append(_make_run(name, base, cell, setting, seed, spec, prof, exp, rwhere))
    return exp


def _make_run(name: str, base: str, cell: dict, setting: dict, seed: int, spec: dict, prof: dict,
              exp: Experiment, where: str) -> Run:
    train_dict = {**spec["train"], "model": spec["model"], "model_config": spec["model_config"], "seed": seed,
                  "device": exp.device, "threads": exp.threads, "progress": False}
    try:
        cfg = TrainConfig.from_dict(train_dict)
    except LandscapeError as e:
        raise LandscapeError(f"{where}: {e}") from None
    measure = _check(spec["measure"], _MEASURE, f"{where}.measure")
    resolved = {"probe_samples": measure.get("probe_samples", 1000), "batch_size": measure.get("batch_size", 1000)}
    for key in ("probe_samples", "batch_size"):
        if resolved[key] < 1:
            raise LandscapeError(f"{where}.measure.{key} must be positive, got {resolved[key]}")
    for section, schema in _SECTIONS.items():
        if section not in measure:
            continue
        sec = _merge(_DEFAULTS[section], _check(measure[section], schema, f"{where}.measure.{section}"))
        sw = f"{where}.measure.{section}"
        if section == "steps":
            if "every" not in sec or sec["every"] < 1:
                raise LandscapeError(f"{sw}: every must be a positive number of steps")
        else:
            if "epochs" not in sec:
                raise LandscapeError(f"{sw}: missing required key 'epochs'")
            sec["epochs"] = parse_epochs(sec["epochs"], cfg.epochs, sw)
        if section in ("probes", "steps"):
            from landscape.probes import METRICS, TRAIN_PROBES

            known = METRICS if section == "probes" else TRAIN_PROBES
            unknown = [m for m in sec["metrics"] if m not in known]
            if unknown or not sec["metrics"]:
                raise LandscapeError(f"{sw}: unknown metrics {unknown or sec['metrics']}; known: {', '.join(known)}")
        for key in ("iters", "vectors", "n_samples", "max_params"):
            if key in sec and sec[key] < 1:
                raise LandscapeError(f"{sw}.{key} must be positive, got {sec[key]}")
        if "eps" in sec and not 0 < sec["eps"] < 1:
            raise LandscapeError(f"{sw}.eps must lie in (0, 1), got {sec['eps']}")
        resolved[section] = sec
    label = cell.get("label", base)
    if setting:
        label += " (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items()) + ")"
    return Run(name, base, label, cell.get("note", ""), setting, seed, cfg, resolved, prof.get("target_acc"))


def build_models(exp: Experiment) -> dict[str, int]:
    """Build every cell's initial model (on the CPU, without data) and return its parameter count."""
    from landscape.models import build

    counts: dict[str, int] = {}
    for run in exp.runs:
        if run.cell in counts:
            continue
        shape, n_classes = DATA_SHAPES[run.train.data]
        fake = SimpleNamespace(X=torch.empty(1, *shape), n_classes=n_classes)
        try:
            model = build(run.train.model, resolved_model_config(run.train, fake))
        except LandscapeError as e:
            raise LandscapeError(f"cell {run.cell}: {e}") from None
        counts[run.cell] = sum(p.numel() for p in model.parameters())
        for section in ("spectrum", "exact"):
            if "params" in run.measure.get(section, {}):
                try:
                    select_params(model, run.measure[section]["params"])
                except LandscapeError as e:
                    raise LandscapeError(f"cell {run.cell}, measure.{section}: {e}") from None
    return counts


# ---- measurement ----

def probe_set(data: TensorData, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe set: n training samples drawn once with seed 0 (the same for every run)."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: min(n, len(data))]
    idx = idx.to(data.device)
    return data.X[idx], data.y[idx]


def _batches(X: torch.Tensor, y: torch.Tensor, n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    X, y = X[:n], y[:n]
    return [(X[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(X), batch_size)]


def select_params(model: nn.Module, globs: list[str] | None) -> list[str] | None:
    """Names of the parameters matching any fnmatch pattern (None: all parameters)."""
    if globs is None:
        return None
    names = [n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not names:
        raise LandscapeError(f"params {globs} match no parameter of the model")
    return names


def measure_spectrum(model: nn.Module, batches: list, cfg: dict) -> tuple[dict, dict]:
    """SLQ estimate of the Hessian spectrum over `batches` (`landscape.hessian`): (summary, arrays)."""
    from landscape.hessian import HessianOperator, slq_density

    op = HessianOperator(model, F.cross_entropy, batches, params=select_params(model, cfg.get("params")))
    sd = slq_density(op, iters=min(cfg["iters"], op.dim), probes=cfg["vectors"], seed=cfg["seed"])
    grid, density = sd.density()
    arrays = {"slq_nodes": sd.nodes, "slq_weights": sd.weights, "grid": grid, "density": density}
    return {**sd.summary(cfg["eps"]), "seconds_slq": sd.meta["seconds"]}, arrays


def measure_exact(model: nn.Module, batches: list, cfg: dict) -> tuple[dict, dict]:
    """Exact Hessian eigenvalues (float64) of a small model, summarized like SLQ: (summary, arrays)."""
    from landscape.hessian import SpectralDensity, exact_hessian

    names = select_params(model, cfg.get("params"))
    n_params = sum(p.numel() for n, p in model.named_parameters() if names is None or n in names)
    if n_params > cfg["max_params"]:
        return {"skipped": f"{n_params} parameters > max_params {cfg['max_params']}", "n_params": n_params}, {}
    # 64 columns per vmap chunk: measured ~1.5x faster than 256 or 512 for the quick-profile FC nets on a CPU
    H = exact_hessian(model, F.cross_entropy, batches, names, max_params=cfg["max_params"], chunk_size=64)
    eigs = torch.linalg.eigvalsh(H).cpu().numpy()
    sd = SpectralDensity(eigs[None, :], np.full((1, eigs.size), 1.0 / eigs.size), eigs.size)
    summary = {k: v for k, v in sd.summary(cfg["eps"]).items() if k not in ("probes", "iters", "trace_stderr")}
    return summary, {"exact_eigenvalues": eigs}


def _probe_records(model: nn.Module, X, y, metrics: list[str], batch_size: int, **extra) -> list[dict]:
    from landscape.probes import run_probes

    records = run_probes(model, (X, y), metrics=metrics, batch_size=batch_size)
    return [{**extra, **{k: v for k, v in r.items() if k != "step"}} for r in records]


def measure_epoch(ckpt: Path, run: Run, probe: tuple, device: torch.device) -> tuple[dict, dict]:
    """Everything `run.measure` asks for at the checkpoint's epoch: (summary JSON, NPZ arrays)."""
    model, meta = load_checkpoint(ckpt, map_location=device)
    epoch, m = meta["epoch"], run.measure
    out: dict = {"epoch": epoch, "step": meta.get("step", 0), "seconds": {}}
    arrays: dict = {}
    X, y = probe
    for section, fn in (("spectrum", measure_spectrum), ("exact", measure_exact)):
        if section in m and epoch in m[section]["epochs"]:
            t0 = time.perf_counter()
            n = m[section].get("n_samples", m["probe_samples"])
            summary, arr = fn(model, _batches(X, y, n, m["batch_size"]), m[section])
            out[section] = {**summary, "n_samples": min(n, len(X))}
            arrays.update(arr)
            out["seconds"][section] = time.perf_counter() - t0
    if "probes" in m and epoch in m["probes"]["epochs"]:
        t0 = time.perf_counter()
        out["probes"] = _probe_records(model, X, y, m["probes"]["metrics"], m["batch_size"],
                                       epoch=epoch, step=out["step"])
        out["seconds"]["probes"] = time.perf_counter() - t0
    return out, arrays


# ---- result keys ----

def probe_keys(records: list[dict]) -> dict:
    """Headline numbers of one measurement's probe records (see the module docstring)."""
    by: dict[str, list[tuple[str, float]]] = {}
    for r in records:
        by.setdefault(r["metric"], []).append((r["block"], r["value"]))
    out: dict = {}

    def vals(metric: str) -> np.ndarray:
        return np.array([v for _, v in by.get(metric, [])], dtype=float)

    ratio = vals("grad_ratio")
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    if ratio.size:
        out.update(grad_ratio_min=float(ratio.min()), grad_ratio_max=float(ratio.max()),
                   grad_ratio_gmean=float(np.exp(np.log(ratio).mean())))
    g_in, g_out = vals("grad_norm_in"), vals("grad_norm_out")
    if g_in.size and g_out.size and g_out[-1] > 0:
        out["grad_gain"] = float(g_in[0] / g_out[-1])
    for metric in ("x_norm2", "f_par_norm2", "f_ortho_norm2", "rho_par", "rho_ortho", "cos_x_out",
                   "dead_frac", "overlap_act", "eff_rank", "small_sv_frac", "overlap_weight"):
        v = vals(metric)
        if v.size:
            out[f"{metric}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    if vals("x_norm2").size:
        out["x_norm2_last"] = float(vals("x_norm2")[-1])
    return out


def step_keys(records: list[dict]) -> dict:
    """Transition point of SPEC B.3 [TD]: the step of the largest ‖x‖² at the last stream site."""
    xs = [r for r in records if r["metric"] == "x_norm2"]
    if not xs:
        return {}
    last = xs[-1]["block"]
    series = [(r["step"], r["value"]) for r in xs if r["block"] == last and r["value"] is not None]
    if not series:
        return {}
    step, peak = max(series, key=lambda t: t[1])
    return {"transition_step": step, "x_norm2_peak": peak}


def measurement_keys(m: dict) -> dict:
    out: dict = {}
    for section, prefix in (("spectrum", "slq_"), ("exact", "exact_")):
        for k in ("lambda_max", "lambda_min", "trace", "degenerate_ratio", "negative_ratio"):
            if k in m.get(section, {}):
                out[prefix + k] = m[section][k]
    return {**out, **probe_keys(m.get("probes", []))}


def train_keys(history: list[dict], target: float | None) -> dict:
    if not history:
        return {}
    last = history[-1]
    out = {k: last[k] for k in ("train_acc", "train_loss", "test_acc", "test_loss")}
    out["best_train_acc"] = max(h["train_acc"] for h in history)
    out["train_seconds"] = sum(h["seconds"] for h in history)
    if target is not None:
        out["epoch_to_target"] = next((h["epoch"] for h in history if h["train_acc"] >= target), None)
    return out


# ---- one run ----

def clean(obj):
    """JSON-safe copy: non-finite floats become null, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _write_json(path: Path, obj) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(clean(obj), indent=1, allow_nan=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()] if path.exists() else []


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_write(path, "w") as f:
        f.write("".join(json.dumps(clean(r), allow_nan=False) + "\n" for r in rows))


def _config_hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


class Interrupted(Exception):
    """Training was stopped by a signal; the run resumes next time."""


def run_one(run: Run, out: Path, exp: Experiment, device: torch.device,
            status: Callable[[str], None] = lambda s: None) -> dict:
    """Train and measure one run into OUT/CELL/seedS; returns its result.json content."""
    rdir = out / run.path
    record = run.record()
    digest = _config_hash(record)
    cell_json = rdir / "cell.json"
    if cell_json.exists():
        old = json.loads(cell_json.read_text()).get("hash")
        if old != digest:
            raise LandscapeError(f"{rdir} was run with a different configuration (hash {old} vs {digest}); "
                                 "delete it or choose another --out")
    rdir.mkdir(parents=True, exist_ok=True)
    _write_json(cell_json, {**record, "hash": digest, "experiment": exp.name, "profile": exp.profile,
                            "notes": exp.notes, "git": git_version()})
    cfg = copy.deepcopy(run.train)
    cfg.device, cfg.out = str(device), str(rdir)
    m = run.measure
    keep = sorted({e for s in ("probes", "spectrum", "exact") if s in m for e in m[s]["epochs"]})
    data_args = {"name": cfg.data, "n_samples": cfg.n_samples, "root": cfg.data_root, "device": device,
                 "seed": cfg.data_seed, "download": cfg.download}
    data = load_data(split="train", **data_args)
    probe = probe_set(data, m["probe_samples"])
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)

    def ckpt_path(epoch: int) -> Path:
        return rdir / f"ckpt_epoch{epoch:03d}.pt"

    def save(model: nn.Module, epoch: int, step: int) -> None:
        save_checkpoint(ckpt_path(epoch), model, meta={"model": model.build_spec, "data": data.spec,
                                                       "epoch": epoch, "step": step, "cell": run.cell,
                                                       "seed": run.seed})

    if 0 in keep and not ckpt_path(0).exists():
        from landscape.models import build

        save(build(cfg.model, resolved_model_config(cfg, data)), 0, 0)
    ckpt = rdir / "checkpoint.pt"

    def at_epoch_end(step: int, model: nn.Module, batch, loss) -> None:
        if step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            if epoch in keep:
                save(model, epoch, step)
            status(f"train {epoch}/{cfg.epochs}")

    callbacks = [at_epoch_end]
    if "steps" in m:  # landscape.probes' training callback: the step's batch, train mode, OUT/probes.jsonl
        from landscape.probes import make_probe_callback

        metrics = m["steps"]["metrics"]
        callbacks.insert(0, make_probe_callback(
            metrics, m["steps"]["every"], out=rdir, steps_per_epoch=steps_per_epoch, batch_size=m["batch_size"],
            loss_fn=partial(F.cross_entropy, label_smoothing=cfg.label_smoothing),
            probe_set=probe[0] if "singularity" in metrics else None))
    cfg.resume = ckpt.exists()
    state, message = "completed", ""
    status("train")
    try:
        result = train(cfg, step_callbacks=callbacks, handle_signals=True)
        if result["status"] == "interrupted":
            raise Interrupted(f"{rdir} holds epoch {result['epoch']}")
        history = result["history"]
    except NonFiniteLoss as e:
        state, message = "diverged", str(e)
        history = _read_jsonl(rdir / "metrics.jsonl")
    trained = history[-1]["epoch"] if history else 0
    for e in keep:  # a diverged epoch's checkpoint holds non-finite weights
        if e > trained:
            ckpt_path(e).unlink(missing_ok=True)
    measured: dict[int, dict] = {}
    for epoch in [e for e in keep if e <= trained]:
        jpath = rdir / "measure" / f"epoch{epoch:03d}.json"
        if not jpath.exists():
            status(f"measure epoch {epoch}")
            summary, arrays = measure_epoch(ckpt_path(epoch), run, probe, device)
            if arrays:
                with atomic_write(jpath.with_suffix(".npz")) as f:
                    np.savez_compressed(f, **arrays)
            _write_json(jpath, summary)
        measured[epoch] = json.loads(jpath.read_text())
    spectra = [{k: v for k, v in s.items() if k in ("epoch", "step", "spectrum", "exact")}
               for s in measured.values() if "spectrum" in s or "exact" in s]
    records = [r for s in measured.values() for r in s.get("probes", [])]
    for name, rows in (("spectrum.jsonl", spectra), ("epoch_probes.jsonl", records)):
        if rows:
            _write_jsonl(rdir / name, rows)
    final = train_keys(history, run.target_acc)
    if measured:
        final.update(measurement_keys(measured[max(measured)]))
    final.update(step_keys(_read_jsonl(rdir / "probes.jsonl")))
    result = {"cell": run.cell, "base": run.base, "label": run.label, "note": run.note, "setting": run.setting,
              "seed": run.seed,
              "status": state, "message": message, "epochs_trained": trained,
              "measured_epochs": sorted(measured), "final": final,
              "init": measurement_keys(measured[0]) if 0 in measured else {}}
    _write_json(rdir / "result.json", result)
    _write_json(rdir / "done.json", {"status": state, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return result


# ---- summary ----

def _stats(values: list) -> dict:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)]
    n = len(finite)
    return {"mean": float(np.mean(finite)) if n else None,
            "std": float(np.std(finite, ddof=1)) if n > 1 else None, "n": n, "values": values}


def summarize(exp: Experiment, out: Path) -> dict:
    """Mean ± std over seeds per cell of every result key, from the finished runs in `out`."""
    cells: dict[str, list[dict]] = {}
    for run in exp.runs:
        path = out / run.path / "result.json"
        if (out / run.path / "done.json").exists() and path.exists():
            cells.setdefault(run.cell, []).append(json.loads(path.read_text()))
    rows = []
    for name in dict.fromkeys(r.cell for r in exp.runs):
        results = cells.get(name, [])
        if not results:
            continue
        row = {"cell": name, "base": results[0]["base"], "label": results[0]["label"], "note": results[0]["note"],
               "setting": results[0]["setting"], "seeds": [r["seed"] for r in results],
               "status": {s: sum(r["status"] == s for r in results) for s in {r["status"] for r in results}}}
        for part in ("final", "init"):
            keys = list(dict.fromkeys(k for r in results for k in r[part]))
            row[part] = {k: _stats([r[part].get(k) for r in results]) for k in keys}
        rows.append(row)
    return {"experiment": exp.name, "profile": exp.profile, "description": exp.description,
            "profile_description": exp.profile_description, "notes": exp.notes, "citations": exp.citations,
            "git": git_version(), "cells": rows}


def headline_table(summary: dict, keys: list[str]) -> str:
    """Markdown table of the headline keys (mean ± std over seeds) per cell."""
    lines = ["| cell | seeds | status | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for row in summary["cells"]:
        cells = []
        for k in keys:
            part, key = ("init", k[5:]) if k.startswith("init.") else ("final", k)
            s = row[part].get(key)
            if s is None or s["mean"] is None:
                cells.append("—")
            else:
                cells.append(f"{s['mean']:.4g}" + (f" ± {s['std']:.2g}" if s["std"] is not None else ""))
        status = ", ".join(f"{v} {k}" for k, v in sorted(row["status"].items()))
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | {status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the grid runner ----

def run_experiment(exp: Experiment, out: Path, *, only: str | None = None, device: str | None = None,
                   progress: bool | None = None) -> dict:
    """Run (or resume) every selected run of `exp` into `out`; returns the summary."""
    from tqdm.auto import tqdm

    dev = resolve_device(device or exp.device)
    if exp.threads is not None:
        torch.set_num_threads(exp.threads)
    runs = [r for r in exp.runs if only is None or fnmatch.fnmatchcase(r.cell, only)]
    if not runs:
        names = ", ".join(dict.fromkeys(r.cell for r in exp.runs))
        raise LandscapeError(f"--only {only!r} matches no cell; cells: {names}")
    record_path = out / "experiment.json"
    if record_path.exists():
        old = json.loads(record_path.read_text())
        if old.get("name") != exp.name or old.get("profile") != exp.profile:
            raise LandscapeError(f"{out} holds {old.get('name')}/{old.get('profile')}, not "
                                 f"{exp.name}/{exp.profile}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(record_path, {**exp.record(), "git": git_version(), "device": str(dev), "argv": sys.argv})
    disable = None if progress is None else not progress
    bar = tqdm(runs, desc=exp.name, unit="run", file=sys.stderr, disable=disable, dynamic_ncols=True)
    try:
        for run in bar:
            if (out / run.path / "done.json").exists():
                bar.set_postfix_str(f"{run.path} done")
                continue
            run_one(run, out, exp, dev, lambda s, run=run: bar.set_postfix_str(f"{run.path}: {s}"))
    finally:
        bar.close()
        summary = summarize(exp, out)
        _write_json(out / "summary.json", summary)
        (out / "summary.md").write_text(f"# {exp.name} ({exp.profile})\n\n{headline_table(summary, exp.headline)}\n")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m landscape.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="experiment TOML (experiments/NAME.toml)")
    p.add_argument("--profile", default="quick", help="profile to run: quick (default) or full")
    p.add_argument("--out", help="output directory (default runs/NAME, or runs/NAME-PROFILE for other profiles)")
    p.add_argument("--only", metavar="GLOB", help="run only the cells whose name matches (fnmatch), e.g. 'res*'")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default: the profile's)")
    p.add_argument("--list", action="store_true",
                   help="validate the profile, build every cell's model, list the runs and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="progress bar over the runs on stderr (default: when stderr is a terminal)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp = load_experiment(args.config, args.profile)
    counts = build_models(exp)
    if args.list:
        for run in exp.runs:
            print(f"{run.path}\t{run.train.model}\t{counts[run.cell]:,} parameters\t{run.label}")
        return 0
    out = Path(args.out or (f"runs/{exp.name}" if exp.profile == "quick" else f"runs/{exp.name}-{exp.profile}"))
    t0 = time.perf_counter()
    try:
        summary = run_experiment(exp, out, only=args.only, device=args.device, progress=args.progress)
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}; rerun the same command to resume", file=sys.stderr)
        return 130
    print(headline_table(summary, exp.headline))
    print(f"{out}: {len(summary['cells'])} cells, wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
