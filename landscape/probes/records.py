"""Probe results as tidy records: a list of `{"step", "block", "metric", "value"}` dicts.

`step` is whatever the caller passed (a training step, an epoch, or None); `block` is the block's
qualified module name (`blocks.3`, `layer2.1`), with `:tag` appended when a block has several
stream sites (`blocks.3:attn`). Values are Python floats; NaN means "undefined" and is written as
an empty CSV cell; JSON writes any non-finite value as `null` (read back as NaN). Extra keys (e.g.
`epoch`) are kept by every writer.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError, first_line
from landscape.io import read_jsonl, write_json, write_jsonl

FIELDS = ("step", "block", "metric", "value")


def make_record(step: int | None, block: str, metric: str, value: float) -> dict:
    """One record; `value` is converted to a Python float.

    Args:
        step: the training step (None: not during training).
        block: the block's name.
        metric: the metric.
        value: the value.

    Returns:
        {"step", "block", "metric", "value"}.
    """
    return {"step": step, "block": block, "metric": metric, "value": float(value)}


def _columns(records: list[dict]) -> list[str]:
    extra = sorted({k for r in records for k in r} - set(FIELDS))
    return [*FIELDS, *extra]


def to_csv(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as CSV (header `step,block,metric,value[,extra...]`); returns the path.

    Args:
        records: the records.
        path: the CSV file.

    Returns:
        The path.
    """
    records = list(records)
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_columns(records))
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return path


def to_json(records: Iterable[dict], path: str | Path, lines: bool = False) -> Path:
    """Write records as one JSON array, or as JSON lines (`lines=True`); NaN and ±inf become null (atomic).

    Args:
        records: the records.
        path: the file.
        lines: JSON lines instead of one array.

    Returns:
        The path.
    """
    records = list(records)
    return write_jsonl(path, records) if lines else write_json(path, records, indent=1)


def read_records(path: str | Path) -> list[dict]:
    """Read records back from `.csv`, `.json` (array) or `.jsonl`; null/empty values become NaN.

    Args:
        path: the file.

    Returns:
        The records.
    """
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"records file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        out = []
        for row in rows:
            r = dict(row)
            r["step"] = None if r.get("step", "") == "" else int(float(r["step"]))
            r["value"] = math.nan if r.get("value", "") == "" else float(r["value"])
            out.append(r)
        return out
    try:
        rows = json.loads(text) if path.suffix == ".json" else read_jsonl(path)
    except ValueError as e:  # json.JSONDecodeError is one
        raise LandscapeError(f"records file {path} is not valid JSON: {first_line(e)}") from None
    for r in rows:
        if r.get("value") is None:
            r["value"] = math.nan
    return rows


def drop_records_after(path: str | Path, step: int) -> None:
    """Keep only the records of steps ≤ `step` in a JSON-lines records file (atomic rewrite; no file, no-op):
    what a resumed run does before appending the steps it recomputes.

    Args:
        path: the JSON-lines file.
        step: the last step kept.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        kept = [r for r in read_jsonl(path) if r["step"] is not None and r["step"] <= step]
    except (ValueError, KeyError, TypeError) as e:
        raise LandscapeError(f"{path} is not a records file ({first_line(e)}); move it away") from None
    write_jsonl(path, kept)


def records_by_block(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """{block: {metric: value}}: the records of one step as nested dicts (a metric given twice keeps the last).

    Args:
        records: the records.

    Returns:
        The nested dict.
    """
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(r["block"], {})[r["metric"]] = r["value"]
    return out


def records_to_table(records: Iterable[dict], rows: str = "block", columns: str = "metric",
                     where: dict | None = None) -> tuple[list, list, np.ndarray]:
    """Pivot records into (row labels, column labels, values[len(rows), len(columns)]) without pandas.

    Labels keep first-seen order; `where={"step": 10}` keeps only matching records; a missing cell
    is NaN, and a cell given twice keeps the last value.

    Args:
        records: the records.
        rows: the key of the row labels.
        columns: the key of the column labels.
        where: {key: value} filters.

    Returns:
        (row labels, column labels, values).
    """
    recs = [r for r in records if all(r.get(k) == v for k, v in (where or {}).items())]
    row_labels = list(dict.fromkeys(r[rows] for r in recs))
    col_labels = list(dict.fromkeys(r[columns] for r in recs))
    ri = {v: i for i, v in enumerate(row_labels)}
    ci = {v: i for i, v in enumerate(col_labels)}
    table = np.full((len(row_labels), len(col_labels)), np.nan)
    for r in recs:
        table[ri[r[rows]], ci[r[columns]]] = r["value"]
    return row_labels, col_labels, table
