"""The committed records as one object the tables, figures and notebooks read: `Store`.

    store = Store()                                  # records/ and experiments/ of this checkout
    store.grid("orhan2018")                          # GridRecords of records/orhan2018
    store.summary("orhan2018", "confirm")            # summary.json of records/orhan2018-confirm, claims from the TOML
    store.experiment("orhan2018")                    # the TOML's resolved quick profile (its declared claims)
    store.table("orhan2018_verdicts")                # a registered RESULTS.md table, as markdown
    store.figure("orhan2018_training", "figures")    # a registered figure, drawn into figures/

Everything is computed from the records on first use and cached; nothing reads runs/.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.experiment.config import Experiment, load_experiment
from landscape.experiment.records import GridRecords

ROOT = Path(__file__).resolve().parents[2]  # the checkout: landscape/experiment/store.py → ../..


def grid_dir(name: str, profile: str = "quick") -> str:
    """records/NAME for the quick profile, records/NAME-PROFILE otherwise.

    Args:
        name: the experiment's name.
        profile: its profile.

    Returns:
        The directory name.
    """
    return name if profile == "quick" else f"{name}-{profile}"


class Store:
    """Records under `records`, experiment TOMLs under `experiments` (defaults: this checkout's)."""

    def __init__(self, records: str | Path | None = None, experiments: str | Path | None = None):
        self.records = Path(records) if records is not None else ROOT / "records"
        self.experiments = Path(experiments) if experiments is not None else ROOT / "experiments"
        self._grids: dict[tuple[str, str], GridRecords] = {}
        self._experiments: dict[tuple[str, str], Experiment] = {}
        self._summaries: dict[tuple[str, str], dict] = {}

    def has(self, name: str, profile: str = "quick") -> bool:
        """Whether the records hold the grid.

        Args:
            name: the experiment's name.
            profile: its profile.

        Returns:
            True when records/DIR/experiment.json exists.
        """
        return (self.records / grid_dir(name, profile) / "experiment.json").exists()

    def grid(self, name: str, profile: str = "quick") -> GridRecords:
        """The grid's records (read once, then cached).

        Args:
            name: the experiment's name.
            profile: its profile.

        Returns:
            The `GridRecords`.
        """
        key = (name, profile)
        if key not in self._grids:
            self._grids[key] = GridRecords(self.records / grid_dir(name, profile))
        return self._grids[key]

    def experiment(self, name: str, profile: str = "quick") -> Experiment:
        """The experiment's TOML resolved for `profile` (read once, then cached).

        Args:
            name: the experiment's name (experiments/NAME.toml).
            profile: the profile.

        Returns:
            The `Experiment`.
        """
        key = (name, profile)
        if key not in self._experiments:
            path = self.experiments / f"{name}.toml"
            if not path.exists():
                raise LandscapeError(f"no experiment {path}")
            self._experiments[key] = load_experiment(path, profile)
        return self._experiments[key]

    def summary(self, name: str, profile: str = "quick") -> dict:
        """summary.json of the grid's records, with the claims the TOML declares for that profile.

        Args:
            name: the experiment's name.
            profile: its profile.

        Returns:
            The summary dict.
        """
        key = (name, profile)
        if key not in self._summaries:
            records = self.grid(name, profile)
            exp = self.experiment(name, profile)
            meta = {**records.experiment, "claims": exp.claims}
            from landscape.experiment.summary import summary_of

            self._summaries[key] = summary_of(meta, records.results(), records.experiment["cells"])
        return self._summaries[key]

    def table(self, name: str) -> str:
        """The markdown of a registered RESULTS.md table (`landscape.experiment.registry`).

        Args:
            name: the registered table's name.

        Returns:
            The markdown.
        """
        from landscape.experiment import registry

        tables = registry.tables()
        if name not in tables:
            raise LandscapeError(f"no registered table {name!r}")
        return tables[name](self)

    def figure(self, name: str, out: str | Path):
        """Draw a registered figure into OUT/NAME.png and .pdf and return it.

        Args:
            name: the registered figure's name.
            out: the figures directory.

        Returns:
            The matplotlib figure.
        """
        from landscape.experiment import registry

        figures = registry.figures()
        if name not in figures:
            raise LandscapeError(f"no registered figure {name!r}")
        return figures[name](self, Path(out) / name)

    @cached_property
    def verdicts(self) -> list[dict]:
        """Every declared claim of every registered study, judged with Holm within its paper's family
        (`landscape.experiment.verdicts.judge_all`)."""
        from landscape.experiment.verdicts import judge_all

        return judge_all(self)
