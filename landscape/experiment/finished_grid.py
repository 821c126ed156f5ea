"""A finished grid's summary and run files as plain data for `landscape.plots` (`Grid`; opened by
`landscape.experiment.results.open_grid`): its cells, their statistics over seeds, the tables of its claims,
and per run the metrics rows, probe records, transition point, spectra and exact eigenvalues.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from landscape.experiment.keys import setting_value, transition_point
from landscape.experiment.summary import claims_table, compare, headline_table, papers_table
from landscape.hessian.cli.curves import spectrum_curves
from landscape.io import read_jsonl


class Grid:
    """A finished grid's summary and run files (`landscape.experiment.results` shows its use)."""

    def __init__(self, runs: str | os.PathLike, *, figures: str | os.PathLike = "figures", smoke: bool = False):
        self.runs, self.figures, self.smoke = Path(runs), Path(figures), smoke
        self.summary = json.loads((self.runs / "summary.json").read_text())
        self.cells = {row["cell"]: row for row in self.summary["cells"]}
        self.notes, self.claims = self.summary["notes"], self.summary.get("claims", [])
        self.experiment = json.loads((self.runs / "experiment.json").read_text())

    def __repr__(self) -> str:
        s = self.summary
        return (f"{self.runs}: {s['experiment']} ({s['profile']}), {len(self.cells)} cells; git {s['git']}\n"
                f"{s['profile_description']}")

    # ---- cells ----
    def present(self, cells: Iterable[str]) -> list[str]:
        """The given cells that this grid has, in the given order.

        Args:
            cells: cell names.

        Returns:
            Those the grid has.
        """
        return [c for c in cells if c in self.cells]

    def family(self, base: str, key: str | None = None) -> list[str]:
        """The cells of one base cell (its sweep), ordered by the swept value `key` (default: the first).

        Args:
            base: the base cell.
            key: the swept key (None: the first).

        Returns:
            The cell names.
        """
        cells = [c for c, row in self.cells.items() if row["base"] == base]
        return sorted(cells, key=lambda c: self.setting(c, key))

    def setting(self, cell: str, key: str | None = None) -> float | str | None:
        """The swept value of `cell` ("model_config.depth", ...; default the first swept key); a "mode:value"
        string gives its value as a number ("scaled:0.5" → 0.5).

        Args:
            cell: the cell name.
            key: the swept key (None: the first).

        Returns:
            The value (a number for "mode:value"), or None for an unswept cell.
        """
        return setting_value(self.cells[cell]["setting"], key)

    def label(self, cell: str) -> str:
        """The cell's display label.

        Args:
            cell: the cell name.

        Returns:
            The label.
        """
        return self.cells[cell]["label"]

    def seeds(self, cell: str) -> list[int]:
        """The seeds the cell ran.

        Args:
            cell: the cell name.

        Returns:
            The seeds.
        """
        return self.cells[cell]["seeds"]

    def model_config(self, cell: str) -> dict:
        """The cell's resolved model config (from experiment.json).

        Args:
            cell: the cell name.

        Returns:
            The model config dict.
        """
        return next(r["train"]["model_config"] for r in self.experiment["runs"] if r["cell"] == cell)

    def measure_config(self, cell: str) -> dict:
        """The cell's resolved measurement settings (probe_samples, spectrum, exact, ...).

        Args:
            cell: the cell name.

        Returns:
            The measurement settings dict.
        """
        return next(r["measure"] for r in self.experiment["runs"] if r["cell"] == cell)

    def run_dir(self, cell: str, seed: int | None = None) -> Path:
        """OUT/CELL/seedS (default: the cell's first seed).

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).

        Returns:
            The run directory.
        """
        return self.runs / cell / f"seed{self.seeds(cell)[0] if seed is None else seed}"

    # ---- numbers ----
    def stat(self, cell: str, key: str) -> dict:
        """{"mean", "std", "n", "low", "high", "values"} of a result key ("init.KEY": at init); {} if absent.

        Args:
            cell: the cell name.
            key: the result key.

        Returns:
            The statistics dict.
        """
        part, key = ("init", key[5:]) if key.startswith("init.") else ("final", key)
        return self.cells[cell][part].get(key, {})

    def mean(self, cell: str, key: str):
        """Mean over seeds (None when missing or never finite).

        Args:
            cell: the cell name.
            key: the result key.

        Returns:
            The mean, or None.
        """
        return self.stat(cell, key).get("mean")

    def values(self, cell: str, key: str) -> list:
        """Per-seed values (None where a run diverged or has no value).

        Args:
            cell: the cell name.
            key: the result key.

        Returns:
            The values, one per seed.
        """
        return self.stat(cell, key).get("values", [])

    def compare(self, key: str, a: str, b: str) -> dict:
        """Paired difference A − B over seeds with its 95% interval (`summary.compare`).

        Args:
            key: the result key.
            a: the first cell.
            b: the second cell.

        Returns:
            {"diff", "low", "high", "n", "p", ...}.
        """
        return compare(self.summary, key, a, b)

    def table(self, keys: Sequence[str]) -> str:
        """The grid's headline table of `keys` (per cell: mean ± SD over seeds, n).

        Args:
            keys: the result keys, one column each.

        Returns:
            The markdown table.
        """
        return headline_table(self.summary, keys)

    def claims_table(self) -> str:
        """The declared claims with their verdicts, as markdown."""
        return claims_table(self.claims) if self.claims else "(no claims declared for this profile)"

    def papers_table(self) -> str:
        """The papers' published numbers beside this grid's (claims that declare them), setup differences stated."""
        return papers_table(self.claims) or "(no published numbers declared for this profile's claims)"

    # ---- run files ----
    def _jsonl(self, cell: str, seed: int | None, name: str) -> list[dict]:
        path = self.run_dir(cell, seed) / name
        return read_jsonl(path) if path.exists() else []

    def metrics(self, cell: str, seed: int | None = None) -> list[dict]:
        """The epoch rows (metrics.jsonl) of one run.

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).

        Returns:
            The rows.
        """
        return self._jsonl(cell, seed, "metrics.jsonl")

    def histories(self, cells: Iterable[str], label=None) -> dict[str, list[list[dict]]]:
        """label → one metrics.jsonl history per seed (for `plot_training_curves`).

        Args:
            cells: the cells drawn (those the grid lacks are left out).
            label: cell → legend label (default `Grid.label`).

        Returns:
            {label: [history per seed]}.
        """
        label = label or self.label
        return {label(c): [self.metrics(c, s) for s in self.seeds(c)] for c in self.present(cells)}

    def records(self, cell: str, seed: int | None = None, kind: str = "epoch") -> list[dict]:
        """Probe records: kind "epoch" (epoch_probes.jsonl, the measurement set) or "step" (probes.jsonl).

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).
            kind: "epoch" (the measurement set's records) or "step" (the training steps').

        Returns:
            The records {..., "block", "metric", "value"}.
        """
        return self._jsonl(cell, seed, {"epoch": "epoch_probes.jsonl", "step": "probes.jsonl"}[kind])

    def seed_records(self, cell: str, kind: str = "epoch") -> list[list[dict]]:
        """The probe records of every seed of a cell.

        Args:
            cell: the cell name.
            kind: "epoch" (measurement set) or "step" (training steps).

        Returns:
            One list of records per seed.
        """
        return [self.records(cell, s, kind) for s in self.seeds(cell)]

    def transition(self, cell: str, seed: int | None = None) -> float | None:
        """The step probes' transition point (`keys.transition_point`), None unless its peak is interior.

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).

        Returns:
            The step of the transition point, or None.
        """
        peak = transition_point(self.records(cell, seed, "step"))
        return peak["step"] if peak and peak["interior"] else None

    def spectrum_rows(self, cell: str, seed: int | None = None) -> list[dict]:
        """spectrum.jsonl: {"epoch", "step", "spectrum", "exact"} per measured epoch (for `plot_spectrum_mass`).

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).

        Returns:
            The rows.
        """
        return self._jsonl(cell, seed, "spectrum.jsonl")

    def spectrum_epochs(self, cell: str, seed: int | None = None, part: str = "spectrum") -> list[int]:
        """The epochs with a measured (not skipped) spectrum.

        Args:
            cell: the cell name.
            seed: the seed (None: the cell's first).
            part: "spectrum" (SLQ) or "exact".

        Returns:
            The epochs.
        """
        return [r["epoch"] for r in self.spectrum_rows(cell, seed)
                if isinstance(r.get(part), dict) and "skipped" not in r[part]]

    def _epoch(self, cell: str, epoch: int | str, seed: int | None, part: str) -> int | None:
        epochs = self.spectrum_epochs(cell, seed, part)
        if not epochs:
            return None
        return max(epochs) if epoch == "last" else epoch

    def spectrum(self, cell: str, epoch: int | str = "last", seed: int | None = None) -> dict | None:
        """One SLQ spectrum as plain data (`landscape.hessian.cli.spectrum_file.read_spectrum`: the summary keys,
        "nodes", "weights", "dim", ...); None when the run has none.

        Args:
            cell: the cell name.
            epoch: an epoch, or "last".
            seed: the seed (None: the cell's first).

        Returns:
            The spectrum dict, or None.
        """
        from landscape.hessian.cli.spectrum_file import read_spectrum

        epoch = self._epoch(cell, epoch, seed, "spectrum")
        return None if epoch is None else read_spectrum(self.run_dir(cell, seed) / "measure" / f"epoch{epoch:03d}")

    def exact_eigenvalues(self, cell: str, epoch: int | str = "last", seed: int | None = None) -> np.ndarray | None:
        """The exact Hessian eigenvalues of one run at one epoch.

        Args:
            cell: the cell name.
            epoch: an epoch, or "last".
            seed: the seed (None: the cell's first).

        Returns:
            The ascending eigenvalues, or None when none were measured.
        """
        epoch = self._epoch(cell, epoch, seed, "exact")
        if epoch is None:
            return None
        with np.load(self.run_dir(cell, seed) / "measure" / f"epoch{epoch:03d}.npz") as f:
            return f["exact_eigenvalues"]

    def curves(self, cells: Iterable[str], epoch: int | str = "last", seed: int | None = None, label=None) -> dict:
        """label → `spectrum_curves` of each cell's spectrum at `epoch` (for `plot_spectral_density`).

        Args:
            cells: the cells drawn.
            epoch: an epoch, or "last".
            seed: the seed (None: each cell's first).
            label: cell → legend label (default `Grid.label`).

        Returns:
            {label: curves}.
        """
        label = label or self.label
        out = {}
        for c in self.present(cells):
            spec = self.spectrum(c, epoch, seed)
            if spec is not None:
                out[label(c)] = spectrum_curves(spec)
        return out
