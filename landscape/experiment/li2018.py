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
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from landscape.data import load_data
from landscape.experiment.nonconvexity import curvature_extremes, surface_nonconvexity
from landscape.io import read_json, write_json
from landscape.surface import Surface, evaluate_grid, mesh_coords, random_directions
from landscape.train import NonFiniteLoss, TrainConfig, train
from landscape.train.losses import evaluation_loss

DEPTHS = (20, 56, 110)
FAMILIES = ("resnet", "fc")
VARIANTS = ("short", "noshort")
_HALF = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
AXIS = tuple(sorted({0.0, *_HALF, *(-c for c in _HALF)}))
MAP_AXIS = (-0.5, 0.0, 0.5)
RATIO_FLOOR = 1e-3
RADII = (0.1, 0.25)
CONFIG_KEYS = ("model", "model_config", "n_samples", "epochs", "batch_size", "optimizer", "lr", "momentum",
               "weight_decay", "schedule", "warmup_epochs", "loss", "seed")
KEYS = ("nonconvexity", "nonconvexity_max", "origin_ratio", "origin_lambda_max", "unconverged",
        "surface_nonconvexity", "loss_at_minimum", "rise_r0.1", "rise_r0.25")


@dataclass(frozen=True)
class LiConfig:
    """The grid: which nets, how they train, how they are measured.

    Attributes:
        seeds: initialization (and shuffle, direction) seeds.
        depths, families: the cells (each with both variants).
        epochs, batch_size, lr, momentum, weight_decay, warmup_epochs: SGD with a cosine schedule.
        n_train: MNIST-1D training samples.
        resnet_width, fc_width: widths of the two families.
        measure_samples: the measurement set (the first N training samples), on which surfaces are evaluated.
        hessian_samples: the Hessian map uses the first N samples of the measurement set.
        tol, max_matmats: the eigensolver's relative residual and its product budget per solve. The solver's
            tolerance is relative to the largest |Ritz value| of its basis (≈ λmax for both solves), so it
            must lie well below the ratios to resolve: at 10⁻² the λmin solve stops after two products on a
            near-null vector (λmin ≈ 0.004 where a 150-product solve and plain Lanczos find −6.3); at 10⁻⁴
            it agrees with them to 4 digits in 12-19 products.
        threads: torch threads per run.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    depths: tuple[int, ...] = DEPTHS
    families: tuple[str, ...] = FAMILIES
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    n_train: int = 4000
    resnet_width: int = 8
    fc_width: int = 64
    measure_samples: int = 128
    hessian_samples: int = 64
    tol: float = 1e-4
    max_matmats: int = 40
    threads: int = 1
    axis: tuple[float, ...] = field(default=AXIS)
    map_axis: tuple[float, ...] = field(default=MAP_AXIS)


# the paper-sized profile (NOT RUN: docs/methods.md §F.6 states its GPU-hours): Li et al.'s width, 5x the epochs,
# surfaces and maps on 10x / 16x the samples, a tenfold tighter eigensolver
FULL = LiConfig(epochs=50, resnet_width=16, measure_samples=1280, hessian_samples=1024, tol=1e-5, max_matmats=100)


def cell_name(family: str, variant: str, depth: int) -> str:
    """"resnet_noshort_56" and the like.

    Args:
        family, variant, depth: the cell.

    Returns:
        FAMILY_VARIANT_DEPTH.
    """
    return f"{family}_{variant}_{depth}"


def cells(cfg: LiConfig) -> list[tuple[str, str, int]]:
    """(family, variant, depth) of every cell, cheapest first.

    Args:
        cfg: the grid (its depths and families).

    Returns:
        The cells, both variants of each.
    """
    return [(f, v, d) for d in sorted(cfg.depths) for f in cfg.families for v in VARIANTS]


def model_spec(family: str, variant: str, depth: int, cfg: LiConfig) -> tuple[str, dict]:
    """(zoo name, model config) of a cell (module docstring).

    Args:
        family: "resnet" or "fc"; variant: "short" or "noshort"; depth: layers (6n + 2 for ResNets).
        cfg: the widths.

    Returns:
        (name, config) for `landscape.models.build`.
    """
    if family == "resnet":
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n + 2, got {depth}")
        return "resnet1d", {"n_blocks": (depth - 2) // 6, "width": cfg.resnet_width,
                            "connect": "identity" if variant == "short" else "none"}
    return "fc", {"kind": "residual" if variant == "short" else "plain", "block": "preact", "norm": "none",
                  "init": "he", "depth": depth, "width": cfg.fc_width,
                  "branch_scale": "inv_sqrt_depth" if variant == "short" else 1.0}


def train_config(family: str, variant: str, depth: int, seed: int, cfg: LiConfig, out: Path) -> TrainConfig:
    """The `landscape.train` configuration of one run (checkpoint in `out`, resumable).

    Args:
        family, variant, depth: the cell; seed: the run's seed; cfg: the grid; out: the run directory.

    Returns:
        The run's `TrainConfig` (cosine schedule with warm-up, CPU, resumable).
    """
    model, model_config = model_spec(family, variant, depth, cfg)
    return TrainConfig(model=model, model_config=model_config, n_samples=cfg.n_train, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, optimizer="sgd", lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, schedule="cosine", warmup_epochs=cfg.warmup_epochs,
                       seed=seed, device="cpu", threads=cfg.threads, out=str(out), resume=True, progress=False)


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


def run_li(runs: str | Path, records: str | Path, cfg: LiConfig = LiConfig(), *, only: str | None = None,
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


def present_cells(runs: Mapping[str, Sequence[Mapping]]) -> list[tuple[str, str, int]]:
    """(family, variant, depth) of the cells that have records, in `cells` order (depth, family, variant).

    Args:
        runs: cell → records.

    Returns:
        The cells with records.
    """
    found = {(r[0]["family"], r[0]["variant"], r[0]["depth"]) for r in runs.values() if r}
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(found, key=lambda c: (c[2], order.get(c[0], 9), VARIANTS.index(c[1])))


def per_seed(runs: Mapping[str, Sequence[Mapping]], cell: str, key: str) -> dict[int, float]:
    """{seed: value} of one key of a cell (from `keys` or `final`).

    Args:
        runs: cell → records; cell: the cell; key: a key of `KEYS` or of `final`.

    Returns:
        {seed: value}, NaN where the run has none.
    """
    return {r["seed"]: _value(r, key) for r in runs.get(cell, ())}


# ---- the declared claims (Li et al. 2018, §5 Fig. 5 and §6 Fig. 7), one Holm family ----------------------

PRIMARY = "nonconvexity"
GAP = "{family}_noshort_over_short_{depth}"     # a derived cell: per seed, noshort / short of the primary metric
CLAIMS = {
    "noshort_56": {"text": "ResNet-56 without shortcuts is less convex than with them",
                   "cells": ["resnet_noshort_56", "resnet_short_56"]},
    "noshort_110": {"text": "ResNet-110 without shortcuts is less convex than with them",
                    "cells": ["resnet_noshort_110", "resnet_short_110"]},
    "noshort_depth": {"text": "without shortcuts, depth makes the landscape less convex (110 vs 20 layers)",
                      "cells": ["resnet_noshort_110", "resnet_noshort_20"]},
    "shortcut_effect_grows": {"text": "the shortcuts' effect on convexity grows with depth: noshort/short is larger "
                                      "at 110 layers than at 20",
                              "cells": [GAP.format(family="resnet", depth=110), GAP.format(family="resnet", depth=20)]},
    "fc_plain_56": {"text": "stream-controlled FC, depth 56: plain less convex than residual",
                    "cells": ["fc_noshort_56", "fc_short_56"]},
    "fc_plain_110": {"text": "stream-controlled FC, depth 110: plain less convex than residual",
                     "cells": ["fc_noshort_110", "fc_short_110"]},
}
DECLARED = "bf1e283"                          # the commit that declared CLAIMS and PRIMARY (git log -S)
FIRST_RUN = "2026-12-07 11:49 UTC"            # the grid's first run (its settings: commit 56fa5e4)


def summary_of(runs: Mapping[str, Sequence[Mapping]]) -> dict:
    """The records as `landscape.experiment.summary`'s shape ({"cells": [{"cell", "seeds", "final": {key:
    {"values"}}, "init": {}}]}) for `verdicts.claim_test`, with the derived noshort/short cells of `GAP`.

    Args:
        runs: cell → records.

    Returns:
        The summary-shaped dict.
    """
    cells = []
    for cell, recs in runs.items():
        keys = sorted(set(KEYS) | {"train_loss", "train_acc", "test_loss", "test_acc"})
        cells.append({"cell": cell, "seeds": [r["seed"] for r in recs], "init": {},
                      "final": {k: {"values": [_value(r, k) for r in recs]} for k in keys}})
    for family, depth in sorted({(f, d) for f, _, d in present_cells(runs)}):
        a, b = (per_seed(runs, cell_name(family, v, depth), PRIMARY) for v in ("noshort", "short"))
        seeds = sorted(set(a) & set(b))
        cells.append({"cell": GAP.format(family=family, depth=depth), "seeds": seeds, "init": {},
                      "final": {PRIMARY: {"values": [a[s] / b[s] for s in seeds]}}})
    return {"cells": cells}


def judged(runs: Mapping[str, Sequence[Mapping]], claims: Mapping[str, Mapping] = CLAIMS) -> list[dict]:
    """Each declared claim's test before Holm, in `landscape.experiment.verdicts`' row shape: the primary metric
    as the ratio A/B paired by seed on the log scale (`verdicts.claim_test`); all claims were declared before
    their data (confirmatory, quick seeds).

    Args:
        runs: cell → records; claims: name → {"text", "cells": [A, B]}.

    Returns:
        One row per claim (`verdicts.judge_claim`'s keys).
    """
    from landscape.experiment.verdicts import claim_test

    summary = summary_of(runs)
    rows = []
    for name, claim in claims.items():
        c = {"cells": list(claim["cells"]), "metric": PRIMARY, "direction": "greater", "scale": "log"}
        rows.append({"paper": "li2018", "grid": "li2018_depth", "name": name, "text": claim["text"],
                     "cells": c["cells"], "direction": "greater", "metric": PRIMARY, "secondary": [],
                     "declared": DECLARED, "first_run": FIRST_RUN, "order": "before", "status": "confirmatory",
                     "profile": "quick", "test": claim_test(summary, c), "exploratory": None, "published": None,
                     "effect": None, "previous": None})
    return rows


def judge_li(runs: Mapping[str, Sequence[Mapping]], claims: Mapping[str, Mapping] = CLAIMS) -> list[dict]:
    """`judged` with Holm's adjustment over the family and the adjusted verdicts (`verdicts.holm_family`).

    Args:
        runs: cell → records; claims: as in `judged`.

    Returns:
        The rows with p_holm, m and the adjusted verdict.
    """
    from landscape.experiment.verdicts import holm_family

    return holm_family(judged(runs, claims))


def _value(rec: Mapping, key: str) -> float:
    v = rec["keys"].get(key, rec["final"].get(key))
    return math.nan if v is None else float(v)
