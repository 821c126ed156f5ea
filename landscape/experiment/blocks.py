"""Block heterogeneity of a small CNN and a small transformer (Zhang et al. 2024), measured after training.

experiments/block_heterogeneity.toml declares the settings, the primary metric and the test (docs/methods.md
§E.7); this module runs them and turns the records into the RESULTS.md table and the figures:

    run_blocks(records_dir, cfg)     train each (model, seed) on MNIST-1D, measure every block's spectrum on the
                                     measurement set, write records_dir/<model>_seed<s>.json (compact: per block
                                     its SLQ nodes and weights; both JS matrices; the vector-halves noise floor)
    summarize_blocks(records, cfg)   per model the heterogeneity over seeds (mean, 95% t interval, n) and the
                                     declared paired test transformer − CNN, with Bonferroni-adjusted intervals
    blocks_table(summary)            the markdown of RESULTS.md's generated block "block_heterogeneity"
    report_blocks(records, figures)  all of it from the records: summary.json, the table, the two figures

Every statistic is recomputed from the records (the nodes and weights), so changing the smoothing changes
the table on a rerun of the report without any new training.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.nn.functional as F

from landscape import stats
from landscape.data import load_data
from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, SpectralDensity
from landscape.hessian.blocks import block_spectra, heterogeneity, js_distance, pair_densities, vector_halves
from landscape.io import read_json, write_json

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "experiments" / "block_heterogeneity.toml"
FIGURES = ("zhang2024_heterogeneity", "zhang2024_block_densities")


@dataclass(frozen=True)
class BlocksConfig:
    """The declared settings (experiments/block_heterogeneity.toml [settings])."""

    models: dict = field(default_factory=dict)
    seeds: int = 5
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    samples: int = 256
    iters: int = 16
    vectors: int = 4
    bandwidth: float = 0.01
    n_grid: int = 2048
    level: float = 0.95
    primary: str = "raw"
    secondary: str = "own"
    cnn: str = "resnet1d"
    transformer: str = "vit1d"


def load_config(path: str | Path = SPEC) -> tuple[BlocksConfig, dict]:
    """(settings, the declared claim) from the TOML.

    Args:
        path: the experiment TOML (default experiments/block_heterogeneity.toml).

    Returns:
        (BlocksConfig, the claim table).
    """
    raw = tomllib.loads(Path(path).read_text())
    return BlocksConfig(**raw["settings"]), raw["claim"]


def record_path(out: str | Path, model: str, seed: int) -> Path:
    """The record file of one (model, seed) of the block-heterogeneity grid: OUT/<model>_seed<seed>.json.

    Args:
        out: the records directory.
        model: the zoo model's name.
        seed: the seed.

    Returns:
        The path.
    """
    return Path(out) / f"{model}_seed{seed}.json"


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return math.nan


def run_one(model_name: str, seed: int, cfg: BlocksConfig) -> dict:
    """Train `model_name` (seed), then measure its block spectra on the first `samples` training samples.

    Args:
        model_name: the zoo model.
        seed: the training and measurement seed.
        cfg: the grid's settings.

    Returns:
        The record: settings, training result, block spectra (nodes, weights, dims), timing and load.
    """
    from landscape.train import TrainConfig, train

    t0, load0 = time.perf_counter(), _load_average()
    result = train(TrainConfig(model=model_name, model_config=dict(cfg.models.get(model_name, {})), epochs=cfg.epochs,
                               lr=cfg.lr, batch_size=cfg.batch_size, optimizer="adam", seed=seed, progress=False))
    t1 = time.perf_counter()
    model = result["model"].eval()
    data = load_data("mnist1d", "train")
    op = HessianOperator(model, F.cross_entropy, (data.X[:cfg.samples], data.y[:cfg.samples]), seed=seed)
    spec = block_spectra(op, iters=cfg.iters, vectors=cfg.vectors, seed=seed, reorth="full")
    final = result["final"]
    return {"model": model_name, "seed": seed, "dim": op.dim, "backend": op.backend,
            "train": {k: final[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            "spectra": spec.to_dict(), "seconds": {"train": t1 - t0, "measure": time.perf_counter() - t1},
            "load_average": {"start": load0, "end": _load_average()}, "threads": torch.get_num_threads()}


def run_blocks(out: str | Path, cfg: BlocksConfig, only: str | None = None, seeds: Sequence[int] | None = None,
               log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Run every missing (model, seed) into OUT/<model>_seed<s>.json (finished records are kept; `only`: just this
    model, `seeds`: just these seeds in this order, so several processes can share the grid).

    Args:
        out: the records directory.
        cfg: the grid's settings.
        only: one model name, or None for both.
        seeds: the seeds to run (None: range(cfg.seeds)).
        log: progress messages.

    Returns:
        The record files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in range(cfg.seeds) if seeds is None else seeds:
        for name in (cfg.cnn, cfg.transformer) if only is None else (only,):
            path = record_path(out, name, seed)
            if not path.exists():
                rec = run_one(name, seed, cfg)
                write_json(path, rec)
                log(f"{path}: {rec['seconds']['train']:.0f} s training, {rec['seconds']['measure']:.0f} s spectra")
                written.append(path)
    return written


def densities(record: Mapping) -> dict[str, SpectralDensity]:
    """{block: SpectralDensity} from a record's nodes and weights.

    Args:
        record: one (model, seed) record.

    Returns:
        {block name: SpectralDensity}.
    """
    out = {}
    for row in record["spectra"]["blocks"]:
        out[row["block"]] = SpectralDensity(np.asarray(row["nodes"]), np.asarray(row["weights"]), int(row["dim"]))
    return out


def measures(record: Mapping, cfg: BlocksConfig) -> dict:
    """The record's heterogeneity (mean pairwise JS distance) at scale None ("raw") and "own", and the noise
    floor: the mean over blocks measured with ≥ 2 vectors of the JS distance between the two vector halves.

    Args:
        record: one (model, seed) record.
        cfg: the grid's settings (bandwidth, grid size).

    Returns:
        {"raw", "own", "noise_floor", "without_top", "top_block", "lanczos_only", "blocks", "matrix_raw",
        "matrix_own"}: the heterogeneities H = mean_{a<b} JS(p_a, p_b) and the noise floor.
    """
    spectra = densities(record)
    raw = heterogeneity(spectra, cfg.bandwidth, cfg.n_grid)
    own = heterogeneity(spectra, cfg.bandwidth, cfg.n_grid, scale="own")
    halves = [js_distance(*pair_densities(*vector_halves(sd), cfg.bandwidth, cfg.n_grid)[1:])
              for sd in spectra.values() if sd.vectors >= 2]
    lanczos = [i for i, row in enumerate(record["spectra"]["blocks"]) if row["method"] == "lanczos"]
    drop, top = _most_influential(raw.matrix)
    return {"raw": raw.mean, "own": own.mean, "noise_floor": float(np.mean(halves)) if halves else math.nan,
            "without_top": drop, "top_block": raw.names[top], "lanczos_only": _pair_mean(raw.matrix, lanczos),
            "blocks": len(spectra), "matrix_raw": raw, "matrix_own": own}


def _pair_mean(D: np.ndarray, keep: Sequence[int]) -> float:
    """Mean distance over the pairs of distinct blocks in `keep`."""
    E = D[np.ix_(keep, keep)]
    return float(E[np.triu_indices(len(keep), 1)].mean()) if len(keep) > 1 else math.nan


def _most_influential(D: np.ndarray) -> tuple[float, int]:
    """(the smallest mean pairwise distance left after removing one block, that block's index); (nan, 0) with fewer
    than three blocks."""
    n = D.shape[0]
    if n < 3:
        return math.nan, 0
    means = [_pair_mean(D, [j for j in range(n) if j != i]) for i in range(n)]
    i = int(np.nanargmin(means))
    return means[i], i


def load_records(out: str | Path) -> dict[str, dict[int, dict]]:
    """{model: {seed: record}} of every record in OUT.

    Args:
        out: the records directory.

    Returns:
        {model: {seed: record}}.
    """
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(out).glob("*_seed*.json")):
        rec = read_json(path)
        runs.setdefault(rec["model"], {})[int(rec["seed"])] = rec
    if not runs:
        raise LandscapeError(f"no block-heterogeneity records in {out}")
    return runs


def summarize_blocks(runs: Mapping[str, Mapping[int, dict]], cfg: BlocksConfig, claim: Mapping) -> dict:
    """Per model and metric the seeds' values, mean and 95% interval; the declared test transformer − CNN (paired
    by seed) for the primary and secondary metric, each with a (1 − α/2) interval (Bonferroni over the two), and
    the verdict on the primary.

    Args:
        runs: {model: {seed: record}}.
        cfg: the grid's settings.
        claim: the declared claim (primary and secondary metric, α).

    Returns:
        {"models", "per_seed", "tests", "verdict"}.
    """
    per = {m: {s: measures(r, cfg) for s, r in sorted(seeds.items())} for m, seeds in runs.items()}
    models = {}
    for m, seeds in per.items():
        recs = [runs[m][s] for s in seeds]
        models[m] = {"n_blocks": next(iter(seeds.values()))["blocks"],
                     "compute": {k: float(sum(r.get("seconds", {}).get(k, math.nan) for r in recs))
                                 for k in ("train", "measure")}
                     | {"load_average": [min(min(r.get("load_average", {}).values(), default=math.nan) for r in recs),
                                         max(max(r.get("load_average", {}).values(), default=math.nan) for r in recs)],
                        "passes": [r["spectra"].get("meta", {}).get("matmats") for r in recs]},
                     "test_acc": stats.t_ci([runs[m][s]["train"]["test_acc"] for s in seeds], cfg.level).as_dict(),
                     **{k: {"values": {s: v[k] for s, v in seeds.items()},
                            **stats.t_ci([v[k] for v in seeds.values()], cfg.level).as_dict()}
                        for k in ("raw", "own", "noise_floor", "without_top", "lanczos_only")},
                     "top_blocks": [v["top_block"] for v in seeds.values()]}
    tests = {}
    level = 1 - (1 - cfg.level) / 2   # Bonferroni over the two declared tests
    for metric in (cfg.primary, cfg.secondary):
        a = models[cfg.transformer][metric]["values"]
        b = models[cfg.cnn][metric]["values"]
        tests[metric] = stats.compare(a, b, claim["direction"], level=level)
    exploratory = {k: stats.compare(models[cfg.transformer][k]["values"], models[cfg.cnn][k]["values"],
                                    claim["direction"], level=cfg.level) for k in ("without_top", "lanczos_only")}
    return {"models": models, "tests": tests, "exploratory": exploratory, "primary": cfg.primary, "level": level,
            "verdict": tests[cfg.primary]["verdict"], "per_seed": per}


def _cell(d: Mapping, digits: int = 3) -> str:
    return f"{d['estimate']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def blocks_table(summary: Mapping, cfg: BlocksConfig) -> str:
    """RESULTS.md's block: per model the heterogeneity (raw and shape-only), the noise floor and test accuracy,
    each a mean [95% interval] over n seeds; then the two declared tests.

    Args:
        summary: `summarize_blocks`' result.
        cfg: the grid's settings.

    Returns:
        The markdown table.
    """
    lines = ["| model | blocks | n | heterogeneity, raw (primary) | shape-only (scale = own) | noise floor | "
             "test accuracy |", "|---|---|---|---|---|---|---|"]
    for m in (cfg.cnn, cfg.transformer):
        r = summary["models"][m]
        lines.append(f"| {m} | {r['n_blocks']} | {r['raw']['n']} | {_cell(r['raw'])} | {_cell(r['own'])} | "
                     f"{_cell(r['noise_floor'])} | {_cell(r['test_acc'])} |")
    lines += ["", f"| test: {cfg.transformer} − {cfg.cnn}, paired by seed | mean difference | "
              f"{summary['level']:.1%} interval | n | p | verdict |", "|---|---|---|---|---|---|"]
    for metric, t in summary["tests"].items():
        role = "primary" if metric == cfg.primary else "secondary"
        lines.append(f"| {metric} ({role}) | {t['mean']:+.3f} | [{t['low']:+.3f}, {t['high']:+.3f}] | {t['n']} | "
                     f"{t['p']:.2g} | {t['verdict']} |")
    lines += ["", "Exploratory (post hoc, chosen after the primary result; no verdict): the heterogeneity without each "
              "seed's most influential block (the one whose removal lowers the mean most) and over the blocks "
              "measured by Lanczos only (one estimator for all pairs); mean [95% interval], the paired difference "
              f"{cfg.transformer} − {cfg.cnn} at 95%.", "",
              "| statistic | " + " | ".join((cfg.cnn, cfg.transformer)) + " | paired difference [95%] | n |",
              "|---|---|---|---|---|"]
    for k, label in (("without_top", "without the most influential block"), ("lanczos_only", "Lanczos blocks only")):
        t = summary["exploratory"][k]
        cells = " | ".join(_cell(summary["models"][m][k]) for m in (cfg.cnn, cfg.transformer))
        lines.append(f"| {label} | {cells} | {t['mean']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}] | {t['n']} |")
    for m in (cfg.cnn, cfg.transformer):
        names = sorted(set(summary["models"][m]["top_blocks"]))
        lines.append(f"| most influential block, {m} | {', '.join(names)} | | | |")
    lines += ["", "| model | training, all seeds (s) | block spectra, all seeds (s) | data passes per seed | "
              "1-min load average (min – max) |", "|---|---|---|---|---|"]
    for m in (cfg.cnn, cfg.transformer):
        c = summary["models"][m]["compute"]
        lo, hi = c["load_average"]
        lines.append(f"| {m} | {c['train']:.0f} | {c['measure']:.0f} | {', '.join(str(p) for p in c['passes'])} | "
                     f"{lo:.1f} – {hi:.1f} |")
    return "\n".join(lines)


def figure_panels(summary: Mapping, runs: Mapping[str, Mapping[int, dict]], cfg: BlocksConfig, seed: int = 0
                  ) -> dict:
    """Plain data for `landscape.plots.plot_block_heterogeneity`: per model the seed's JS matrix and block names,
    the per-seed heterogeneity values and their interval, and the seed's block densities on one grid each.

    Args:
        summary: `summarize_blocks`' result.
        runs: {model: {seed: record}}.
        cfg: the grid's settings.
        seed: the seed whose matrices and densities are drawn.

    Returns:
        {model: {"names", "matrix", "values", "interval", "densities"}}.
    """
    out = {}
    for m in (cfg.cnn, cfg.transformer):
        meas = summary["per_seed"][m][seed]
        spectra = densities(runs[m][seed])
        out[m] = {"names": meas["matrix_raw"].names, "matrix": meas["matrix_raw"].matrix,
                  "values": list(summary["models"][m]["raw"]["values"].values()),
                  "interval": (summary["models"][m]["raw"]["low"], summary["models"][m]["raw"]["high"]),
                  "kinds": [row["kind"] for row in runs[m][seed]["spectra"]["blocks"]],
                  "densities": _common_grid(spectra, cfg)}
    return out


def _common_grid(spectra: Mapping[str, SpectralDensity], cfg: BlocksConfig) -> dict:
    """{block: (grid, density)} on one grid over all the model's blocks, σ = bandwidth · that span (the
    smoothing of the JS distances, at the model's scale)."""
    lo = min(sd.lambda_min for sd in spectra.values())
    hi = max(sd.lambda_max for sd in spectra.values())
    sigma = cfg.bandwidth * (hi - lo if hi > lo else 1.0)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, cfg.n_grid)
    return {n: sd.density(grid, sigma) for n, sd in spectra.items()}


def check_seeds(runs: Mapping[str, Mapping[int, dict]], cfg: BlocksConfig, names: Sequence[str]) -> None:
    """Every model has every declared seed (a partial grid is never summarized).

    Args:
        runs: {model: {seed: record}}.
        cfg: the grid's settings (its seed count).
        names: the models that must be complete.

    Raises:
        LandscapeError: a model lacks a seed.
    """
    for m in names:
        missing = sorted(set(range(cfg.seeds)) - set(runs.get(m, {})))
        if missing:
            raise LandscapeError(f"block heterogeneity: {m} lacks seeds {missing}; run the grid first")


def report_blocks(records: str | Path, figures: str | Path | None, cfg: BlocksConfig, claim: Mapping
                  ) -> tuple[dict, str]:
    """(summary, markdown table) from the records in RECORDS; writes RECORDS/summary.json and, with `figures`,
    FIGURES/zhang2024_heterogeneity.png/.pdf and FIGURES/zhang2024_block_densities.png/.pdf.

    Args:
        records: the records directory.
        figures: the figures directory (None: no figures).
        cfg: the grid's settings.
        claim: the declared claim.

    Returns:
        (summary, markdown table).
    """
    from landscape.plots import plot_block_densities, plot_block_heterogeneity

    runs = load_records(records)
    check_seeds(runs, cfg, (cfg.cnn, cfg.transformer))
    summary = summarize_blocks(runs, cfg, claim)
    write_json(Path(records) / "summary.json", {k: v for k, v in summary.items() if k != "per_seed"})
    if figures is not None:
        panels = figure_panels(summary, runs, cfg)
        plot_block_heterogeneity(panels, Path(figures) / FIGURES[0])
        plot_block_densities(panels, Path(figures) / FIGURES[1])
    return summary, blocks_table(summary, cfg)
