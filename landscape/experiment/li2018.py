"""Li et al. 2018 where their claim lives: a depth series of BatchNorm ResNets with and without shortcuts.

    records = run_li("runs/li2018", "records/li2018_depth")    # train + measure every (cell, seed), resumable
    rows = summarize_li(load_li("records/li2018_depth"))       # per cell: every statistic, mean ± SD, n
    claims = judge_li(load_li("records/li2018_depth"))         # the declared claims, Holm-corrected

Claim (Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets", §5 and
Fig. 5; §6 and Fig. 7): with filter-normalized directions, ResNets without shortcuts become chaotic and
non-convex as depth grows (ResNet-20-noshort still near-convex, ResNet-56/110-noshort chaotic), while with
shortcuts they stay near-convex at every depth; and the 2-D picture agrees with the full Hessian: the ratio
|λmin/λmax| of the Hessian's extreme eigenvalues is near 0 where the surface looks convex and large where
it does not (their "non-convexity map").

Nets (`cells`, docs/methods.md §F.6): the zoo's `resnet1d` (pre-activation 1-D conv ResNet with BatchNorm,
three stages of n blocks, width 8 in the quick profile (Li et al.'s 16 in `FULL`), depth 6n + 2 = 20, 56,
110), with identity shortcuts ("short") or none ("noshort"); beside them stream-controlled FC nets of the
same depths (`fc`, pre-activation branches W·ReLU(s), He init, no normalization): residual with branches
× 1/√L ("short") and plain ("noshort", the He-initialized chain s ← W·ReLU(s) + b, whose stream variance
He init preserves). MNIST-1D, SGD with momentum (Li et al.'s optimizer), 5 seeds.

Measurement of each trained net, on the measurement set (the first `measure_samples` training samples),
in eval mode (BatchNorm with the trained running statistics, as Li et al. evaluate):
- the 2-D surface L(θ* + a·d₁ + b·d₂) on a 19 × 19 grid over [−1, 1]² that is fine near the minimum
  (`AXIS`: spacing 0.025 up to |c| = 0.05, 0.05 up to 0.2, then 0.1, 0.2, 0.25, 0.25), d₁, d₂ Gaussian
  directions drawn with the run's seed and filter-normalized, their bias and BatchNorm entries zero (Li et
  al.'s "biasbn" ignored);
- the non-convexity map: at each point of `MAP_AXIS`² the Hessian's λmax = the top eigenvalue of H and
  λmin = −(top eigenvalue of −H), both by `landscape.hessian.top_eigenpairs` (block Krylov, residual ≤
  `tol` × the largest |Ritz value|, at most `max_matmats` products) on a `HessianOperator` of the first
  `hessian_samples` samples of the measurement set at that point; ratio = |λmin / λmax|.

Declared before the grid (committed first, see RESULTS.md): the primary metric of a run is `nonconvexity`,
the mean of the ratio over the 8 map points off the origin, each ratio floored at `RATIO_FLOOR` (10⁻³, the
eigensolver's resolution). A claim compares two cells paired by seed on log(nonconvexity): the ratio of
geometric means with its log-scale 95% t interval, the paired t-test p, Holm-adjusted within `CLAIMS`.
Secondary (all reported, none decides): the ratio at the origin, λmax at the origin, the surface's own 2-D
non-convexity (`surface_nonconvexity`), the loss rise at r = 0.1 and 0.25 (mean over the circle, read on
the fine grid), train / test accuracy, the loss at the minimum, and unconverged eigen-solves.

This module trains and measures the runs; the cells, nets and settings are `li2018_grid`, the claims and their
judgement `li2018_claims` (both re-exported here).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from landscape.data import load_data
from landscape.experiment.li2018_claims import (
    CLAIMS,
    DECLARED,
    FIRST_RUN,
    GAP,
    PRIMARY,
    judge_li,
    judged,
    per_seed,
    present_cells,
    summary_of,
)
from landscape.experiment.li2018_grid import (
    AXIS,
    CONFIG_KEYS,
    DEPTHS,
    FAMILIES,
    FULL,
    KEYS,
    MAP_AXIS,
    QUICK,
    RADII,
    RATIO_FLOOR,
    VARIANTS,
    LiConfig,
    cell_name,
    cells,
    model_spec,
    train_config,
)
from landscape.experiment.nonconvexity import curvature_extremes, surface_nonconvexity
from landscape.io import read_json, write_json
from landscape.surface import Surface, evaluate_grid, mesh_coords, random_directions
from landscape.train import NonFiniteLoss, train
from landscape.train.losses import evaluation_loss

__all__ = ["AXIS", "CLAIMS", "CONFIG_KEYS", "DECLARED", "DEPTHS", "FAMILIES", "FIRST_RUN", "FULL", "GAP", "KEYS",
           "MAP_AXIS", "PRIMARY", "QUICK", "RADII", "RATIO_FLOOR", "VARIANTS", "LiConfig", "NonFiniteLoss",
           "cell_name", "cells", "judge_li", "judged", "load_li", "measure", "model_spec", "per_seed", "present_cells",
           "record_path", "run_keys", "run_li", "run_one", "summary_of", "train_config"]


def measure(model: nn.Module, loss_fn: Callable, X: Tensor, y: Tensor, seed: int, cfg: LiConfig) -> dict:
    """The surface and the non-convexity map of a trained net (module docstring); plain JSON data.

    Args:
        model: the trained net (put in eval mode here; the caller's modes are not restored).
        loss_fn: the run's loss.
        X, y: the measurement set.
        seed: seed of the two directions.
        cfg: grid and solver settings.

    Returns:
        {"axis", "loss" [len(axis)]², "accuracy", "map": [{"a", "b", "lambda_max", "lambda_min", "ratio",
        residuals, converged, matmats}], "seconds": {...}}.
    """
    model.eval()
    dirs = random_directions(model, 2, seed=seed)
    t0 = time.perf_counter()
    axis = np.asarray(cfg.axis, float)
    vals = evaluate_grid(model, loss_fn, (X, y), dirs, mesh_coords(axis, axis))
    t1 = time.perf_counter()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    points = []
    for b in cfg.map_axis:
        for a in cfg.map_axis:
            at = copy.deepcopy(model)
            with torch.no_grad():
                for n, p in at.named_parameters():
                    p.copy_(base[n] + a * dirs[0][n] + b * dirs[1][n])
            ext = curvature_extremes(at, loss_fn, (X[:cfg.hessian_samples], y[:cfg.hessian_samples]), tol=cfg.tol,
                                     max_matmats=cfg.max_matmats, seed=seed, backend="double_backward",
                                     check_deterministic=False)     # CPU kernels of these nets are deterministic
            points.append({"a": a, "b": b, **ext})
    n = len(axis)
    return {"axis": axis.tolist(), "loss": vals.loss.reshape(n, n).tolist(),
            "accuracy": vals.accuracy.reshape(n, n).tolist(), "map": points,
            "seconds": {"surface": t1 - t0, "map": time.perf_counter() - t1}}


def run_keys(m: Mapping) -> dict:
    """The per-run statistics of the module docstring from one `measure` result.

    Args:
        m: a `measure` result.

    Returns:
        {key: value} for every key of `KEYS`.
    """
    axis = np.asarray(m["axis"], float)
    surf = Surface(axis, np.asarray(m["loss"], float), np.asarray(m["accuracy"], float), y=axis)
    off = [p for p in m["map"] if (p["a"], p["b"]) != (0.0, 0.0)]
    origin = next(p for p in m["map"] if (p["a"], p["b"]) == (0.0, 0.0))
    keys = {"nonconvexity": float(np.mean([max(p["ratio"], RATIO_FLOOR) for p in off])),
            "nonconvexity_max": float(max(p["ratio"] for p in off)),
            "origin_ratio": origin["ratio"], "origin_lambda_max": origin["lambda_max"],
            "unconverged": int(sum(not (p["converged_max"] and p["converged_min"]) for p in m["map"])),
            "surface_nonconvexity": surface_nonconvexity(axis, np.asarray(m["loss"], float), radius=0.5),
            "loss_at_minimum": float(surf.value_at(np.zeros((1, 2)))[0])}
    for s in (surf.sharpness(r) for r in RADII):
        keys[f"rise_r{s['radius']:g}"] = s["rise_mean"]
    return keys


def run_one(family: str, variant: str, depth: int, seed: int, cfg: LiConfig, runs: Path,
            data: tuple[Tensor, Tensor]) -> dict:
    """Train (resumable, in RUNS/<cell>/seed<s>) and measure one run; returns its record. A run whose loss
    becomes non-finite is recorded as diverged, with no measurement (its keys are NaN).

    Args:
        family, variant, depth, seed: the run; cfg: the grid; runs: where training runs go.
        data: the measurement set (X, y).

    Returns:
        The run's record (docs/formats.md, "Records of the studies").
    """
    cell = cell_name(family, variant, depth)
    tcfg = train_config(family, variant, depth, seed, cfg, runs / cell / f"seed{seed}")
    record = {"experiment": "li2018_depth", "cell": cell, "family": family, "variant": variant, "depth": depth,
              "seed": seed, "config": {k: v for k, v in tcfg.to_dict().items() if k in CONFIG_KEYS}}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        result = train(tcfg)
    except NonFiniteLoss as e:
        return {**record, "diverged": str(e), "history": [], "final": {}, "measure": None,
                "keys": dict.fromkeys(KEYS, math.nan)}
    t1 = time.perf_counter()
    m = measure(result["model"], evaluation_loss(result["config"]), *data, seed, cfg)
    m["seconds"]["train"] = t1 - t0
    m["seconds"]["cpu"] = time.process_time() - c0                  # user + system of train and measure
    final = result["final"]
    return {**record, "diverged": None,
            "history": [{k: h[k] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}
                        for h in result["history"]],
            "final": {k: final[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            "measure": m, "keys": run_keys(m)}


def record_path(records: Path, cell: str, seed: int) -> Path:
    """RECORDS/<cell>_seed<s>.json.

    Args:
        records: the records directory; cell, seed: the run.

    Returns:
        The record's path.
    """
    return Path(records) / f"{cell}_seed{seed}.json"


def run_li(runs: str | Path, records: str | Path, cfg: LiConfig = QUICK, *, only: str | None = None,
           log: Callable[[str], None] = lambda s: None) -> dict:
    """Train and measure every (cell, seed) whose record is missing; `only`: cells whose name contains it.

    Args:
        runs: where the training runs go (checkpoints; not committed).
        records: where one compact JSON record per run goes (committed), plus config.json of the grid.
        cfg: the grid.
        only: a substring of the cell names to run (several processes can share a grid).
        log: called with each finished record's path.

    Returns:
        `load_li(records)`.
    """
    runs, records = Path(runs), Path(records)
    records.mkdir(parents=True, exist_ok=True)
    write_json(records / "config.json", {**asdict(cfg), "axis": list(cfg.axis), "map_axis": list(cfg.map_axis)},
               indent=1)
    data = load_data("mnist1d", "train", n_samples=cfg.n_train)
    X, y = data.X[:cfg.measure_samples], data.y[:cfg.measure_samples]
    for family, variant, depth in cells(cfg):
        cell = cell_name(family, variant, depth)
        if only is not None and only not in cell:
            continue
        for seed in cfg.seeds:
            path = record_path(records, cell, seed)
            if not path.exists():
                write_json(path, run_one(family, variant, depth, seed, cfg, runs, (X, y)), indent=None, digits=6)
                log(str(path))
    return load_li(records)


def load_li(records: str | Path) -> dict[str, list[dict]]:
    """cell → its runs' records (ordered by seed), from RECORDS/*.json.

    Args:
        records: the records directory.

    Returns:
        {cell: [record, ...]}.
    """
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(records).glob("*_seed*.json")):
        rec = read_json(path)
        out.setdefault(rec["cell"], []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r["seed"])
    return out
