"""What the notebooks import: open a finished experiment grid (or run it), and read its runs, tables,
claims, spectra and transition points as plain data for `landscape.plots`.

    grid = open_grid("experiments/oh2025.toml", "runs/oh2025")   # runs the quick profile if not yet run
    grid.table(["train_acc", "test_acc"])          # markdown: mean ± sample SD over seeds per cell
    grid.claims_table()                            # markdown: each declared claim's paired Δ, 95% CI, verdict
    grid.histories(["linear", "ortho_feature"])    # label → per-seed metrics.jsonl rows, for plot_training_curves
    grid.curves(["plain", "residual"])             # label → spectrum curves, for plot_spectral_density

In smoke mode (`smoke=True`, or LANDSCAPE_SMOKE=1) the quick profile is shrunk to toy size (`shrink`) and run
into a temp directory, figures too, so a notebook executes end to end in seconds and never touches the
committed figures. Every number a notebook prints comes from here or from `summary.json`; every statistic
follows `landscape.experiment.summary` (sample SD, t intervals, the interval-based verdict).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from landscape.experiment.config import load_experiment, resolve
from landscape.experiment.finished_grid import Grid
from landscape.experiment.runner import run_experiment
from landscape.experiment.summary import fmt
from landscape.hessian.cli.curves import spectrum_curves
from landscape.train import load_toml

__all__ = ["Grid", "fmt", "interval_text", "open_grid", "shrink", "smoke_mode", "spectrum_curves"]


def smoke_mode() -> bool:
    """LANDSCAPE_SMOKE=1: the notebooks' CI mode (toy sizes, temp directories)."""
    return os.environ.get("LANDSCAPE_SMOKE") == "1"


def shrink(raw: dict, seeds: int = 1) -> dict:
    """The quick profile at toy size: 2 epochs on 256 samples, width-8 depth-3 nets (a cell's own depth, e.g.
    a depth sweep, still wins), `seeds` seeds, few probe samples and Lanczos steps; every cell, sweep and
    measurement kind still runs.

    Args:
        raw: the parsed experiment TOML (changed in place).
        seeds: the seeds kept.

    Returns:
        The same dict.
    """
    prof = raw["profiles"]["quick"]
    prof["seeds"] = prof.get("seeds", [0])[:seeds]
    prof.setdefault("train", {}).update(n_samples=256, epochs=2)
    prof.setdefault("model_config", {}).update(width=8, depth=3)
    m = prof.setdefault("measure", {})
    m.update(probe_samples=128, batch_size=128)
    if "probes" in m:
        m["probes"]["epochs"] = "all"
    if "spectrum" in m:
        m["spectrum"].update(epochs=["init", "last"], iters=8, vectors=2, n_samples=128)
    if "steps" in m:
        m["steps"]["every"] = 2
    for cell in prof.get("cells", {}).values():
        if "exact" in cell.get("measure", {}):
            cell["measure"]["exact"]["n_samples"] = 64
    return raw


def open_grid(config: str | os.PathLike, runs: str | os.PathLike | None = None, *, smoke: bool | None = None,
              seeds: int = 1, figures: str | os.PathLike = "figures") -> Grid:
    """The finished quick-profile grid of `config` in `runs` (default runs/NAME), run first when it has no
    summary.json. Smoke mode (default: `smoke_mode()`): the `shrink`-ed grid with `seeds` seeds, run into a
    temp directory, with the figures in another.

    Args:
        config: the experiment TOML.
        runs: the run directory (default runs/NAME).
        smoke: run the shrunk grid (None: `smoke_mode()`).
        seeds: seeds of the smoke grid.
        figures: the figures directory.

    Returns:
        The `Grid`.
    """
    smoke = smoke_mode() if smoke is None else smoke
    if smoke:
        tmp = Path(tempfile.mkdtemp(prefix="landscape-smoke-"))
        out, figures = tmp / "runs", tmp / "figures"
        exp = resolve(shrink(load_toml(config), seeds), "quick", where=Path(config).name)
        run_experiment(exp, out, progress=False)
    else:
        exp = load_experiment(config)
        out = Path(runs or f"runs/{exp.name}")
        if not (out / "summary.json").exists():  # no finished grid yet: run the quick profile (minutes on a CPU)
            run_experiment(exp, out)
    return Grid(out, figures=figures, smoke=smoke)


def interval_text(c: Mapping, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """"Δ = +0.012 [−0.004, +0.028] (n = 5, p = 0.13)" from a `compare` result, optionally scaled (×100 for pp).

    Args:
        c: a `compare` result {"diff", "low", "high", "n", "p"}.
        digits: significant digits.
        scale: multiplies the difference and its bounds.
        unit: appended to each number ("pp", ...).

    Returns:
        The text.
    """
    if c.get("diff") is None:
        return f"Δ = — (n = {c.get('n', 0)})"
    sign = lambda v: f"{v * scale:+.{digits}g}{unit}"  # noqa: E731
    ci = f" [{sign(c['low'])}, {sign(c['high'])}]" if c.get("low") is not None else ""
    p = "" if c.get("p") is None or math.isnan(c["p"]) else f", p = {c['p']:.2g}"
    return f"Δ = {sign(c['diff'])}{ci} (n = {c['n']}{p})"
