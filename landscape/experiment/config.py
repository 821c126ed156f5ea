"""Experiment config: validate an experiments/*.toml and resolve one profile into runs (cell × seed).

Config (TOML; unknown keys are errors; every table below is checked key by key):


    name, description          strings; `name` gives the default output directory
    paper                      the paper whose family of claims this grid's claims join (Holm's
                               correction runs over a paper's family; default: name)
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
      extends = "quick"        start from that profile (this one's keys win, section by section)
      only = [...]             keep only the runs of these cells (names after the sweep, fnmatch patterns):
                               a confirmatory profile re-runs a few cells with fresh seeds
    cell keys: label, note, skip, model, model_config (merged over the profile's), train (merged over the
      profile's), measure (merged section by section over the profile's), seeds, and
      sweep = {"model_config.connect" = ["scaled:0.5", "scaled:2"], "train.lr" = [...]}: one run
      directory per combination, named NAME_<value>[_<value>...] ("mode:value" strings give their
      value: "scaled:0.5" → "0.5"; characters other than letters, digits, '_', '.', '-' are dropped).
    measure keys: probe_samples (the measurement set's size, default 1000), batch_size (per pass, 1000),
      [probes]   epochs, metrics (of landscape.probes.METRICS; default grad_norm, stream, singularity)
      [spectrum] epochs, iters (80), vectors (SLQ random vectors, 4), n_samples (default probe_samples),
                 eps (degenerate/negative threshold relative to λmax, 1e-3), seed (0)
      [exact]    epochs, n_samples, max_params (10,000: larger models are skipped, noted), eps
      [steps]    every (K optimizer steps), metrics (of landscape.probes.TRAIN_PROBES; default stream)
    epochs: "all", or a list of epoch numbers and "init" (0), "last", "every:K".

    [claims.NAME]              a claim judged on the grid: schema and resolution in `landscape.experiment.claims`

Models are not built here (`build_models` builds each cell's once, without data, to validate it).
"""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import torch

from landscape.errors import LandscapeError
from landscape.experiment.claims import resolve_claims
from landscape.experiment.schema import EPOCHS, INT_LIST, STR_LIST, check, is_a
from landscape.objective import select_params
from landscape.train import TrainConfig, load_toml, resolved_model_config
from landscape.train.losses import DEFAULT_LOSS

# input shape and class count per data set, so a config validates (and builds its models) without the data
DATA_SHAPES = {"mnist1d": ((40,), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
               "cifar100-coarse": ((3, 32, 32), 20), "svhn": ((3, 32, 32), 10)}
# train keys the runner sets itself
_RUNNER_KEYS = {"seed", "out", "resume", "device", "threads", "progress", "probes", "probe_every", "model",
                "model_config"}
_TOP = {"name": str, "paper": str, "description": str, "citations": STR_LIST, "notes": STR_LIST,
        "headline": STR_LIST, "cells": dict, "profiles": dict, "claims": dict}
_PROFILE = {"description": str, "extends": str, "only": STR_LIST, "seeds": INT_LIST, "device": str, "threads": int,
            "target_acc": float,
            "train": dict, "model": str, "model_config": dict, "measure": dict, "cells": dict}
_CELL = {"label": str, "note": str, "model": str, "model_config": dict, "train": dict, "measure": dict,
         "sweep": dict, "seeds": INT_LIST, "skip": bool}
_MEASURE = {"probe_samples": int, "batch_size": int, "probes": dict, "spectrum": dict, "exact": dict,
            "steps": dict}
_SECTIONS = {
    "probes": {"epochs": EPOCHS, "metrics": STR_LIST},
    "spectrum": {"epochs": EPOCHS, "iters": int, "vectors": int, "n_samples": int, "eps": float, "seed": int,
                 "params": STR_LIST},
    "exact": {"epochs": EPOCHS, "n_samples": int, "max_params": int, "eps": float, "params": STR_LIST},
    "steps": {"every": int, "metrics": STR_LIST},
}
_DEFAULTS = {
    "probes": {"metrics": ["grad_norm", "stream", "singularity"]},
    "spectrum": {"iters": 80, "vectors": 4, "eps": 1e-3, "seed": 0},
    "exact": {"max_params": 10_000, "eps": 1e-3},
    "steps": {"metrics": ["stream"]},
}


def parse_epochs(spec, epochs: int, where: str) -> list[int]:
    """Epoch numbers (0 = init) from "all" or (a list of) ints / "init" / "last" / "every:K".

    Args:
        spec: the epochs entry of a measurement section.
        epochs: the run's training epochs.
        where: the key's location, for messages.

    Returns:
        The sorted epoch numbers.
    """
    if spec == "all":
        return list(range(epochs + 1))
    out: set[int] = set()
    for item in [spec] if isinstance(spec, str) else spec:
        if is_a(item, int):
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
        """The run's directory below OUT: CELL/seedS."""
        return f"{self.cell}/seed{self.seed}"

    def record(self) -> dict:
        """The run's resolved config as plain data (also hashed to refuse resuming a changed run)."""
        cfg = self.train.to_dict()
        for key in ("out", "resume", "device", "threads", "progress"):
            cfg.pop(key)
        if cfg["loss"] == DEFAULT_LOSS:    # the default loss is implied, so the record's hash does not depend on it
            cfg.pop("loss")
        return {"cell": self.cell, "base": self.base, "label": self.label, "note": self.note,
                "setting": self.setting, "seed": self.seed, "train": cfg, "measure": self.measure,
                "target_acc": self.target_acc}


@dataclass
class Experiment:
    """A validated config with one profile resolved into runs."""

    name: str
    paper: str
    description: str
    citations: list[str]
    notes: list[str]
    headline: list[str]
    profile: str
    profile_description: str
    device: str
    threads: int | None
    runs: list[Run] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """The resolved experiment as JSON (OUT/experiment.json)."""
        return {"name": self.name, "paper": self.paper, "description": self.description, "profile": self.profile,
                "profile_description": self.profile_description, "citations": self.citations,
                "notes": self.notes, "headline": self.headline, "claims": self.claims,
                "runs": [r.record() for r in self.runs]}


def load_experiment(path: str | Path, profile: str = "quick") -> Experiment:
    """Read and validate an experiment TOML and resolve `profile` into its runs (models are not built).

    Args:
        path: the TOML file.
        profile: the profile to resolve.

    Returns:
        The `Experiment`.
    """
    raw = load_toml(path)
    return resolve(raw, profile, where=Path(path).name)


def resolve(raw: dict, profile: str, where: str = "config") -> Experiment:
    """Validate the config dict and expand `profile` into runs; errors name the offending key.

    Args:
        raw: the parsed TOML.
        profile: the profile to expand.
        where: the file name, for messages.

    Returns:
        The `Experiment`.
    """
    check(raw, _TOP, where, required=("name", "profiles"))
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", raw["name"]):
        raise LandscapeError(f"{where}: name {raw['name']!r} must be letters, digits, '_', '.', '-'")
    profiles = raw["profiles"]
    if profile not in profiles:
        raise LandscapeError(f"{where}: no profile {profile!r}; available: {', '.join(profiles) or 'none'}")
    pwhere = f"{where}: profiles.{profile}"
    prof = check(profiles[profile], _PROFILE, pwhere)
    if "extends" in prof:
        base = prof["extends"]
        if base not in profiles or base == profile or "extends" in profiles[base]:
            raise LandscapeError(f"{pwhere}.extends: {base!r} is not another profile of this file (one level)")
        prof = _merge(check(profiles[base], _PROFILE, f"{where}: profiles.{base}"),
                      {k: v for k, v in prof.items() if k != "extends"})
    shared, own = raw.get("cells", {}), prof.get("cells", {})
    for table, w in ((shared, f"{where}: cells"), (own, f"{pwhere}.cells")):
        for base, cell in table.items():
            check(cell, _CELL, f"{w}.{base}")
    cells = {base: _merge(shared.get(base, {}), own.get(base, {})) for base in {**shared, **own}}
    cells = {base: cell for base, cell in cells.items() if not cell.get("skip", False)}
    if not cells:
        raise LandscapeError(f"{pwhere}: no cells (give [cells.NAME] or [profiles.{profile}.cells.NAME])")
    base_train = prof.get("train", {})
    bad = sorted(set(base_train) & _RUNNER_KEYS)
    if bad:
        raise LandscapeError(f"{pwhere}.train: {bad} are set by the runner (use seeds, device, threads, model, "
                             "model_config)")
    base_measure = check(prof.get("measure", {}), _MEASURE, f"{pwhere}.measure")
    exp = Experiment(raw["name"], raw.get("paper", raw["name"]), raw.get("description", ""),
                     raw.get("citations", []), raw.get("notes", []),
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
    if "only" in prof:
        keep = {n for n in names if any(fnmatch.fnmatchcase(n, g) for g in prof["only"])}
        unmatched = [g for g in prof["only"] if not any(fnmatch.fnmatchcase(n, g) for n in names)]
        if unmatched:
            raise LandscapeError(f"{pwhere}.only: {unmatched} match no cell; cells: {', '.join(sorted(names))}")
        exp.runs = [r for r in exp.runs if r.cell in keep]
        names = keep
    exp.claims = resolve_claims(raw.get("claims", {}), profile, names, where)
    return exp


def _make_run(name: str, base: str, cell: dict, setting: dict, seed: int, spec: dict, prof: dict,
              exp: Experiment, where: str) -> Run:
    train_dict = {**spec["train"], "model": spec["model"], "model_config": spec["model_config"], "seed": seed,
                  "device": exp.device, "threads": exp.threads, "progress": False}
    try:
        cfg = TrainConfig.from_dict(train_dict)
    except LandscapeError as e:
        raise LandscapeError(f"{where}: {e}") from None
    measure = check(spec["measure"], _MEASURE, f"{where}.measure")
    resolved = {"probe_samples": measure.get("probe_samples", 1000), "batch_size": measure.get("batch_size", 1000)}
    for key in ("probe_samples", "batch_size"):
        if resolved[key] < 1:
            raise LandscapeError(f"{where}.measure.{key} must be positive, got {resolved[key]}")
    for section, schema in _SECTIONS.items():
        if section not in measure:
            continue
        sec = _merge(_DEFAULTS[section], check(measure[section], schema, f"{where}.measure.{section}"))
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
    """Build every cell's initial model (on the CPU, without data) and return its parameter count.

    Args:
        exp: the resolved experiment.

    Returns:
        {cell: parameter count}.
    """
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

