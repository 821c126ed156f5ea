"""budget.json of the Li depth series and the edge-of-stability sweep, per grid part, from their records.

    python experiments/part_budgets.py

These two grids are run by their own scripts (experiments/li2018_depth.py, experiments/edge_of_stability.py),
resumably and across sessions, so their wall time and load average are not one process's and are not recorded
(null). What the records hold is summed: the edge-of-stability records carry each run's CPU time (training and
measurement); the Li records carry each run's measurement CPU time only (`measure.seconds.cpu`), written as
`measure_cpu_seconds` while the part's total CPU time stays null (not recorded).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape.experiment.records import write_record  # noqa: E402

NOTE = ("run by its own resumable script across two sessions on a shared 2-core VM: wall time and load average "
        "not recorded")


def eos(records: Path) -> dict:
    """Parts gd and adam: run count and the sum of each run's recorded CPU seconds."""
    parts: dict[str, dict] = {}
    for path in sorted(records.glob("*_seed*.json")):
        rec = json.loads(path.read_text())
        part = parts.setdefault(path.name.split("_")[0], {"runs": 0, "cpu": 0.0})
        part["runs"] += 1
        part["cpu"] += rec["cpu_seconds"]
    return {"parts": [{"name": k, "runs": v["runs"], "seconds": None, "cpu_seconds": round(v["cpu"]),
                       "load_start": None, "load_end": None} for k, v in parts.items()], "note": NOTE}


def li(records: Path) -> dict:
    """Parts resnet_ and fc_: run count and the sum of each run's measurement CPU seconds."""
    parts: dict[str, dict] = {}
    for path in sorted(records.glob("*_seed*.json")):
        rec = json.loads(path.read_text())
        part = parts.setdefault(f"{rec['family']}_", {"runs": 0, "cpu": 0.0})
        part["runs"] += 1
        part["cpu"] += rec["measure"]["seconds"]["cpu"]
    return {"parts": [{"name": k, "runs": v["runs"], "seconds": None, "cpu_seconds": None,
                       "measure_cpu_seconds": round(v["cpu"]), "load_start": None, "load_end": None}
                      for k, v in parts.items()], "note": NOTE + "; training CPU time not recorded",
            "full": "not run"}


if __name__ == "__main__":
    for name, fn in (("eos", eos), ("li2018_depth", li)):
        out = ROOT / "records" / name
        write_record(out / "budget.json", fn(out))
        print(out / "budget.json")
