"""The one place where an experiment registers what it reports: its grids, the tables of RESULTS.md and the figures.

A study is a module of `landscape.experiment.studies` named in `STUDIES`, holding

    GRIDS    [GridSpec("orhan2018"), GridSpec("orhan2018", "confirm"), ...]: the grids whose records it reads
             (records/NAME for the quick profile, records/NAME-PROFILE otherwise)
    TABLES   {"orhan2018_claims": fn(store) -> markdown}: each one a generated block of RESULTS.md,
             <!-- generated: NAME --> ... <!-- end: NAME -->
    FIGURES  {"orhan2018_training": fn(store, path) -> matplotlib Figure}: drawn to figures/NAME.png/.pdf

and nothing else: `python -m landscape.experiment.report` regenerates every block and figure from the records
(`landscape.experiment.store.Store`), and tests/experiment/test_report.py checks that RESULTS.md is what the
records give. Adding an experiment is one module and one line in `STUDIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from landscape.errors import LandscapeError

# the studies, in the order their blocks are generated (a name is landscape.experiment.studies.NAME)
STUDIES: tuple[str, ...] = ("verdicts", "orhan2018", "oh2025", "zaeemzadeh2018", "liu2020", "li2018", "cohen2021",
                              "block_heterogeneity")
# sections of RESULTS.md still typed by hand, between <!-- pending: NAME --> and <!-- end: NAME -->, with the work
# that replaces them by generated blocks; `report --check` accepts exactly these (and says so), nothing else
PENDING: dict[str, str] = {}


@dataclass(frozen=True)
class GridSpec:
    """One grid's records: experiments/NAME.toml run with PROFILE, kept in records/NAME[-PROFILE]."""

    name: str
    profile: str = "quick"

    @property
    def dir(self) -> str:
        """The grid's records directory name: NAME, or NAME-PROFILE for a profile other than quick."""
        return self.name if self.profile == "quick" else f"{self.name}-{self.profile}"

    @property
    def spec(self) -> str:
        """NAME or NAME:PROFILE (what experiments/run_quick_suite.sh takes)."""
        return self.name if self.profile == "quick" else f"{self.name}:{self.profile}"


Table = Callable[..., str]
Figure = Callable[..., object]


def study(name: str) -> ModuleType:
    """The study module `landscape.experiment.studies.NAME`.

    Args:
        name: the study's name (one of `STUDIES`).

    Returns:
        The module.
    """
    try:
        return importlib.import_module(f"landscape.experiment.studies.{name}")
    except ModuleNotFoundError as e:
        raise LandscapeError(f"no study {name!r}; known: {', '.join(STUDIES)}") from e


def _collect(attr: str) -> dict:
    out: dict = {}
    for name in STUDIES:
        for key, value in getattr(study(name), attr, {}).items():
            if key in out:
                raise LandscapeError(f"{attr[:-1].lower()} {key!r} is registered twice (study {name})")
            out[key] = value
    return out


def grids() -> list[GridSpec]:
    """Every registered grid, each once, in study order."""
    return list(dict.fromkeys(g for name in STUDIES for g in getattr(study(name), "GRIDS", [])))


def tables() -> dict[str, Table]:
    """Block name → function(store) returning the block's markdown."""
    return _collect("TABLES")


def figures() -> dict[str, Figure]:
    """Figure name → function(store, path) drawing figures/NAME.png/.pdf and returning the Figure."""
    return _collect("FIGURES")
