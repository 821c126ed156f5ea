"""The number and table encoding of a record (docs/formats.md, "Records"): floats to `DIGITS` significant
digits, non-finite ones as the strings "nan", "inf", "-inf" (`compact`, `number`), and probe records as one
table (`probe_table`, `table_records`). `VERSION` is the record format's version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from landscape.errors import LandscapeError

VERSION = 1
DIGITS = 6  # configs, histories, measurement summaries
TABLE_DIGITS = 5  # the probe tables and the SLQ quadrature: the bulk of a record
EXACT_DIGITS = 5
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


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
