"""The records of one grid (records/GRID): its experiment and its runs, read back for the tables, figures and
notebooks (`GridRecords`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.experiment.keys import setting_value
from landscape.experiment.record_reading import epoch_records, history, read_record, run_result, step_records


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
        return setting_value(self.cell_runs(cell)[0]["config"]["setting"], key)

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
