"""Compact per-run records: what a finished grid keeps in the checkout (records/), and everything the tables,
figures and notebooks read. Checkpoints stay in runs/ (ignored); a record holds only plain numbers.

    python -m landscape.experiment.records runs/orhan2018 records/orhan2018   # extract a finished grid

    records/GRID/experiment.json    the resolved experiment (name, profile, descriptions, notes, citations,
                                    headline, claims, git, device), without its run list
    records/GRID/CELL/seedS.json    one run (format in docs/formats.md, "Records"):
        config          the run's resolved config (cell, base, label, setting, seed, train, measure), git commit
        status, message, epochs_trained, measured_epochs
        history         metrics.jsonl as columns: {"epoch": [...], "train_loss": [...], ...}
        measure         per measured epoch: the SLQ summary (with its quadrature brackets), the exact-spectrum
                        summary, the transitions, timings — everything of measure/epochNNN.json but the probes
        epoch_probes    the measurement-set records as a table (`probe_table`)
        step_probes     the training-step probe records as a table
        spectra         the SLQ nodes and weights of the last measured epoch (for density figures)
        exact           the exact Hessian eigenvalues per epoch where they were computed (5 significant digits)

Numbers are written with 6 significant digits (`compact`; 5 in the probe tables, the SLQ quadrature and the
exact eigenvalues, the bulk of a record); a non-finite value is the string "nan", "inf" or "-inf" so a diverged
run or an overflowed ratio stays visible (JSON has no NaN). Result keys are never
stored: `run_result` re-derives them from the record with today's `keys` definitions, so a changed key
definition reaches every committed run.

This module extracts and writes records; their number and table encoding is `record_format`, one record read
back `record_reading`, a grid's records `grid_records` (all re-exported here).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.experiment.grid_records import GridRecords
from landscape.experiment.record_format import (
    DIGITS,
    EXACT_DIGITS,
    TABLE_DIGITS,
    VERSION,
    compact,
    number,
    probe_table,
    table_records,
)
from landscape.experiment.record_reading import (
    epoch_records,
    exact_eigenvalues,
    history,
    measured,
    read_record,
    run_result,
    spectrum,
    step_records,
)
from landscape.io import atomic_write, read_jsonl

__all__ = ["DIGITS", "EXACT_DIGITS", "TABLE_DIGITS", "VERSION", "GridRecords", "compact", "epoch_records",
           "exact_eigenvalues", "extract_grid", "extract_run", "history", "main", "measured", "number", "probe_table",
           "read_budget", "read_record", "run_result", "spectrum", "step_records", "table_records", "write_budget",
           "write_record"]


def _columns(rows: Sequence[Mapping]) -> dict:
    keys = list(dict.fromkeys(k for r in rows for k in r))  # a null in the file is a non-finite value
    return {k: [(math.nan if r[k] is None else r[k]) if k in r else None for r in rows] for k in keys}


# ---- extract a finished run ----

def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def extract_run(rdir: str | Path) -> dict:
    """The record of one finished run directory (OUT/CELL/seedS with done.json and result.json).

    Args:
        rdir: the run directory.

    Returns:
        The record: config, result, history, probe tables, measurements and spectra.
    """
    rdir = Path(rdir)
    if not (rdir / "done.json").exists():
        raise LandscapeError(f"{rdir} is not a finished run (no done.json)")
    cell, result = _json(rdir / "cell.json"), _json(rdir / "result.json")
    config = {k: cell[k] for k in ("cell", "base", "label", "note", "setting", "seed", "train", "measure",
                                   "target_acc", "git") if k in cell}
    jsonl = lambda name: read_jsonl(rdir / name) if (rdir / name).exists() else []  # noqa: E731
    measure, spectra, exact = {}, {}, {}
    epochs = [e for e in result["measured_epochs"]]
    for e in epochs:
        m = _json(rdir / "measure" / f"epoch{e:03d}.json")
        measure[str(e)] = {k: v for k, v in m.items() if k != "probes"}
        npz = rdir / "measure" / f"epoch{e:03d}.npz"
        if npz.exists():
            with np.load(npz) as f:
                if "exact_eigenvalues" in f:
                    exact[str(e)] = compact(f["exact_eigenvalues"], EXACT_DIGITS)
    slq = [e for e in epochs if (rdir / "measure" / f"epoch{e:03d}" / "spectrum.npz").exists()]
    if slq:
        from landscape.hessian.cli.spectrum_file import read_spectrum

        f = read_spectrum(rdir / "measure" / f"epoch{slq[-1]:03d}")
        spectra[str(slq[-1])] = {"nodes": f["nodes"], "weights": f["weights"], "dim": int(f["dim"])}
    record = {"version": VERSION, "config": config, "status": result["status"], "message": result.get("message", ""),
              "epochs_trained": result["epochs_trained"], "measured_epochs": epochs,
              "history": _columns(jsonl("metrics.jsonl")), "measure": measure}
    tables = {"epoch_probes": probe_table(jsonl("epoch_probes.jsonl"), ("epoch", "step")),
              "step_probes": probe_table(jsonl("probes.jsonl")), "spectra": spectra}
    return {**compact(record), **compact(tables, TABLE_DIGITS), "exact": exact}


def write_record(path: Path, record: Mapping) -> None:
    """One record as compact JSON (one line), written atomically.

    Args:
        path: the record file.
        record: the record.
    """
    with atomic_write(path, "w") as f:
        f.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")


def extract_grid(runs: str | Path, out: str | Path) -> int:
    """Write the record of every finished run of the grid in `runs` under `out` (see the module docstring),
    plus `out/experiment.json`; returns the number of runs written. Unfinished runs are left out.

    Args:
        runs: the grid's run directory.
        out: the records directory.

    Returns:
        The number of run records written.
    """
    runs, out = Path(runs), Path(out)
    exp_path = runs / "experiment.json"
    if not exp_path.exists():
        raise LandscapeError(f"{runs} holds no experiment grid (no experiment.json)")
    exp = _json(exp_path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in exp.items() if k not in ("runs", "argv")}
    meta["cells"] = list(dict.fromkeys(r["cell"] for r in exp["runs"]))
    write_record(out / "experiment.json", compact(meta))
    n = 0
    for run in exp["runs"]:
        rdir = runs / run["cell"] / f"seed{run['seed']}"
        if (rdir / "done.json").exists():
            write_record(out / run["cell"] / f"seed{run['seed']}.json", extract_run(rdir))
            n += 1
    return n


def write_budget(out: Path, seconds: float, load: str | None = None, cpu_seconds: float | None = None) -> None:
    """OUT/budget.json: the grid's wall time and CPU time (user + system: its wall time on an idle core), the
    machine's load average at its start and end, the machine.

    Args:
        out: the records directory.
        seconds: the grid's wall time.
        load: "start-end" load averages (None: not recorded).
        cpu_seconds: the grid's user + system time.
    """
    import os
    import platform
    import time

    low, _, high = (load or "").partition("-")
    budget = {"seconds": round(float(seconds)), "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds),
              "load_start": float(low) if low else None,
              "load_end": float(high) if high else None, "cores": os.cpu_count(), "processor": platform.processor()
              or platform.machine(), "finished": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
              "threads": 1, "nice": 10}
    write_record(out / "budget.json", budget)


def read_budget(root: Path) -> dict | None:
    """The grid's OUT/budget.json (wall time, CPU time, load, machine), or None when it has none.

    Args:
        root: the records directory.

    Returns:
        The budget dict or None.
    """
    path = Path(root) / "budget.json"
    return json.loads(path.read_text()) if path.exists() else None

def main(argv: list[str] | None = None) -> int:
    """`python -m landscape.experiment.records RUNS OUT`: extract the compact records of a finished grid.

    Args:
        argv: the command-line arguments (None: sys.argv[1:]).

    Returns:
        The exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m landscape.experiment.records",
                                 description="extract the compact records of a finished grid (docs/formats.md)")
    ap.add_argument("runs", help="the grid's run directory (runs/NAME)")
    ap.add_argument("out", help="the records directory (records/NAME)")
    ap.add_argument("--seconds", type=float, help="the grid's wall time, for OUT/budget.json")
    ap.add_argument("--cpu-seconds", type=float, help="the CPU time (user + system) of the grid's processes")
    ap.add_argument("--load", help="the 1-minute load average at the grid's start and end, 'A-B'")
    args = ap.parse_args(argv)
    n = extract_grid(args.runs, args.out)
    if args.seconds is not None:
        write_budget(Path(args.out), args.seconds, args.load, args.cpu_seconds)
    print(f"{args.out}: {n} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from landscape.cli import run_cli

    sys.exit(run_cli(main))
