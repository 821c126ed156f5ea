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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.experiment.keys import final_keys, measurement_keys, step_keys, train_keys
from landscape.io import atomic_write, read_jsonl

VERSION = 1
DIGITS = 6  # configs, histories, measurement summaries
TABLE_DIGITS = 5  # the probe tables and the SLQ quadrature: the bulk of a record
EXACT_DIGITS = 5
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# ---- numbers ----

def compact(value, digits: int = DIGITS):
    """`value` with every float rounded to `digits` significant digits and non-finite floats as strings.

    Args:
        value: a JSON-able value (nested dicts/lists, numpy scalars).
        digits: significant digits.

    Returns:
        The compacted copy.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return float(f"{v:.{digits}g}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return compact(value.tolist(), digits)
    if isinstance(value, Mapping):
        return {str(k): compact(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact(v, digits) for v in value]
    raise LandscapeError(f"records: cannot store a {type(value).__name__}")


def number(value):
    """Inverse of `compact` for one value: "nan"/"inf"/"-inf" → float; None stays None.

    Args:
        value: a compacted value.

    Returns:
        The float (or the value unchanged).
    """
    return _NONFINITE.get(value, value) if isinstance(value, str) else value


def _numbers(value):
    if isinstance(value, str):
        return number(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


# ---- tables of records ----

def probe_table(records: Sequence[Mapping], time: Sequence[str] = ("step",)) -> dict:
    """Probe records {time..., "block", "metric", "value"} as one table: {"time": {name: [t...]}, "blocks",
    "metrics", "order": [[block index, metric index] in the order the probes wrote them], "values": {metric:
    [[value per block] per time]}}: null where a block has no record, NaN where the record's value is null (the
    run files' spelling of a non-finite value).

    Args:
        records: the probe records.
        time: the record keys that name a time point ("step", or "epoch" and "step").

    Returns:
        The table ({} without records).
    """
    if not records:
        return {}
    times = list(dict.fromkeys(tuple(r[k] for k in time) for r in records))
    blocks = list(dict.fromkeys(r["block"] for r in records))
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    t_index = {t: i for i, t in enumerate(times)}
    b_index = {b: i for i, b in enumerate(blocks)}
    m_index = {m: i for i, m in enumerate(metrics)}
    order = list(dict.fromkeys((b_index[r["block"]], m_index[r["metric"]]) for r in records))
    values = {m: [[None] * len(blocks) for _ in times] for m in metrics}
    for r in records:
        value = math.nan if r["value"] is None else r["value"]  # the run files write a non-finite value as null
        values[r["metric"]][t_index[tuple(r[k] for k in time)]][b_index[r["block"]]] = value
    return {"time": {k: [t[i] for t in times] for i, k in enumerate(time)}, "blocks": blocks, "metrics": metrics,
            "order": [list(o) for o in order], "values": values}


def table_records(table: Mapping) -> list[dict]:
    """The records of a `probe_table` again: time by time, each time in the table's (block, metric) order.

    Args:
        table: a `probe_table`.

    Returns:
        The records.
    """
    if not table:
        return []
    names = list(table["time"])
    n = len(table["time"][names[0]])
    out = []
    for i in range(n):
        when = {k: table["time"][k][i] for k in names}
        for j, k in table["order"]:
            m = table["metrics"][k]
            v = table["values"][m][i][j]
            if v is not None:
                out.append({**when, "block": table["blocks"][j], "metric": m, "value": number(v)})
    return out


def _columns(rows: Sequence[Mapping]) -> dict:
    keys = list(dict.fromkeys(k for r in rows for k in r))  # a null in the file is a non-finite value
    return {k: [(math.nan if r[k] is None else r[k]) if k in r else None for r in rows] for k in keys}


def _rows(columns: Mapping) -> list[dict]:
    if not columns:
        return []
    n = len(next(iter(columns.values())))
    return [{k: number(v[i]) for k, v in columns.items() if v[i] is not None} for i in range(n)]


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


# ---- read a record back ----

def read_record(path: str | Path) -> dict:
    """One run's record, refusing another format version.

    Args:
        path: the record file.

    Returns:
        The record dict.
    """
    record = json.loads(Path(path).read_text())
    if record.get("version") != VERSION:
        raise LandscapeError(f"{path}: record version {record.get('version')!r}, expected {VERSION}")
    return record


def history(record: Mapping) -> list[dict]:
    """metrics.jsonl rows of the run.

    Args:
        record: one run's record.

    Returns:
        The epoch rows.
    """
    return _rows(record.get("history", {}))


def epoch_records(record: Mapping) -> list[dict]:
    """The measurement-set records {"epoch", "step", "block", "metric", "value"}.

    Args:
        record: one run's record.

    Returns:
        The measurement-set records, as the runner wrote them.
    """
    return table_records(record.get("epoch_probes", {}))


def step_records(record: Mapping) -> list[dict]:
    """The training-step probe records {"step", "block", "metric", "value"}.

    Args:
        record: one run's record.

    Returns:
        The records.
    """
    return table_records(record.get("step_probes", {}))


def measured(record: Mapping) -> dict[int, dict]:
    """{epoch: measure/epochNNN.json as the runner wrote it (probes included)}.

    Args:
        record: one run's record.

    Returns:
        {epoch: measurement}.
    """
    probes: dict[int, list] = {}
    for r in epoch_records(record):
        probes.setdefault(r["epoch"], []).append(r)
    out = {}
    for e, m in record.get("measure", {}).items():
        m = _numbers(m)
        if int(e) in probes:
            m = {**m, "probes": probes[int(e)]}
        out[int(e)] = m
    return out


def run_result(record: Mapping) -> dict:
    """result.json of the run, re-derived from the record with today's key definitions (`keys`).

    Args:
        record: one run's record.

    Returns:
        The result dict (as `runner.write_result` writes it).
    """
    cfg = record["config"]
    meas = measured(record)
    final = train_keys(history(record), cfg.get("target_acc"))
    measured_final, from_epoch = final_keys(meas)
    final.update(measured_final)
    final.update(step_keys(step_records(record)))
    return {"cell": cfg["cell"], "base": cfg["base"], "label": cfg["label"], "note": cfg.get("note", ""),
            "setting": cfg["setting"], "seed": cfg["seed"], "status": record["status"],
            "message": record.get("message", ""), "epochs_trained": record["epochs_trained"],
            "measured_epochs": record["measured_epochs"], "final": final, "from_epoch": from_epoch,
            "init": measurement_keys(meas[0]) if 0 in meas else {}}


def spectrum(record: Mapping, epoch: int | None = None) -> dict | None:
    """The stored SLQ spectrum (default: the last one) as {"nodes", "weights", "dim", "epoch"} plus its summary
    keys, the form `landscape.hessian.cli.curves.spectrum_curves` reads; None when the run has none.

    Args:
        record: one run's record.
        epoch: the epoch (None: the last with a spectrum).

    Returns:
        The spectrum dict, or None.
    """
    spectra = record.get("spectra", {})
    if not spectra:
        return None
    e = str(epoch) if epoch is not None else max(spectra, key=int)
    if e not in spectra:
        return None
    s = spectra[e]
    summary = _numbers(record["measure"][e].get("spectrum", {}))
    return {**summary, "nodes": np.asarray(s["nodes"], float), "weights": np.asarray(s["weights"], float),
            "dim": s["dim"], "epoch": int(e)}


def exact_eigenvalues(record: Mapping, epoch: int | None = None) -> np.ndarray | None:
    """The stored exact eigenvalues (ascending; default: the last epoch that has them), or None.

    Args:
        record: one run's record.
        epoch: the epoch (None: the last with exact eigenvalues).

    Returns:
        The eigenvalues, or None.
    """
    exact = record.get("exact", {})
    if not exact:
        return None
    e = str(epoch) if epoch is not None else max(exact, key=int)
    return np.asarray(_numbers(exact[e]), float) if e in exact else None


class GridRecords:
    """The records of one grid (records/GRID): its experiment and its runs, in run order."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "experiment.json").exists():
            raise LandscapeError(f"{self.root} holds no records (no experiment.json); extract a finished grid with "
                                 "`python -m landscape.experiment.records runs/NAME records/NAME`")
        self.experiment = json.loads((self.root / "experiment.json").read_text())
        self.runs: list[dict] = []
        for cell in self.experiment["cells"]:
            paths = sorted((self.root / cell).glob("seed*.json"), key=lambda p: int(p.stem[4:]))
            self.runs += [read_record(p) for p in paths]
        self._results: list[dict] | None = None

    def results(self) -> list[dict]:
        """Every run's re-derived result.json (`run_result`), in run order."""
        if self._results is None:
            self._results = [run_result(r) for r in self.runs]
        return self._results

    def run(self, cell: str, seed: int) -> dict:
        """The record of one run.

        Args:
            cell: the cell name.
            seed: the seed.

        Returns:
            The record dict.
        """
        for r in self.runs:
            if r["config"]["cell"] == cell and r["config"]["seed"] == seed:
                return r
        raise LandscapeError(f"{self.root}: no record of {cell} seed {seed}")

    def cell_runs(self, cell: str) -> list[dict]:
        """The records of one cell, in seed order.

        Args:
            cell: the cell name.

        Returns:
            Its records.
        """
        return [r for r in self.runs if r["config"]["cell"] == cell]

    def cells(self, base: str | None = None) -> list[str]:
        """The cells that have records (of one base cell, i.e. its sweep, when given), in run order.

        Args:
            base: a base cell (None: every cell).

        Returns:
            The cell names.
        """
        return list(dict.fromkeys(r["config"]["cell"] for r in self.runs
                                  if base is None or r["config"]["base"] == base))

    def label(self, cell: str) -> str:
        """The cell's display label.

        Args:
            cell: the cell name.

        Returns:
            The label.
        """
        return self.cell_runs(cell)[0]["config"]["label"]

    def setting(self, cell: str, key: str | None = None):
        """The swept value of `cell` (default the first swept key); "mode:value" strings give their number.

        Args:
            cell: the cell name.
            key: the swept key (None: the first).

        Returns:
            The value, or None for an unswept cell.
        """
        setting = self.cell_runs(cell)[0]["config"]["setting"]
        if not setting:
            return None
        value = setting[key] if key else next(iter(setting.values()))
        if isinstance(value, str) and ":" in value:
            try:
                return float(value.rpartition(":")[2])
            except ValueError:
                return value
        return value

    def histories(self, cell: str) -> list[list[dict]]:
        """metrics.jsonl rows per seed.

        Args:
            cell: the cell name.

        Returns:
            One list of epoch rows per seed.
        """
        return [history(r) for r in self.cell_runs(cell)]

    def epoch_records(self, cell: str) -> list[list[dict]]:
        """The measurement-set records per seed.

        Args:
            cell: the cell name.

        Returns:
            One list of measurement-set records per seed.
        """
        return [epoch_records(r) for r in self.cell_runs(cell)]

    def step_records(self, cell: str) -> list[list[dict]]:
        """The training-step probe records per seed.

        Args:
            cell: the cell name.

        Returns:
            One list of step records per seed.
        """
        return [step_records(r) for r in self.cell_runs(cell)]

    def transitions(self, cell: str) -> list[str]:
        """The transition blocks (measured dimension-changing blocks) of the cell's first run.

        Args:
            cell: the cell name.

        Returns:
            The block names.
        """
        measure = self.cell_runs(cell)[0].get("measure", {})
        return next((m["transitions"] for m in measure.values() if m.get("transitions")), [])

    def summary(self, seeds: Iterable[int] | None = None) -> dict:
        """summary.json of the grid from its records (`landscape.experiment.summary.summary_of`), over `seeds`
        (default all).

        Args:
            seeds: the seeds summarized (None: all).

        Returns:
            The summary dict.
        """
        from landscape.experiment.summary import summary_of

        keep = None if seeds is None else set(seeds)
        results = [r for r in self.results() if keep is None or r["seed"] in keep]
        return summary_of(self.experiment, results, self.experiment["cells"])


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
