"""One run's record read back (`read_record`) as what the runner wrote: its metrics rows, probe records,
measurements, spectrum and exact eigenvalues, and its result.json re-derived with today's key definitions
(`run_result`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.experiment.keys import final_keys, measurement_keys, step_keys, train_keys
from landscape.experiment.record_format import VERSION, number, table_records


def _numbers(value):
    if isinstance(value, str):
        return number(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def _rows(columns: Mapping) -> list[dict]:
    if not columns:
        return []
    n = len(next(iter(columns.values())))
    return [{k: number(v[i]) for k, v in columns.items() if v[i] is not None} for i in range(n)]


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
