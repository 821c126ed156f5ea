"""Orhan & Pitkow 2018 (docs/methods.md §A): skips and singularities — the grids, tables and figures."""

from landscape.experiment.registry import GridSpec

GRIDS = [GridSpec("orhan2018"), GridSpec("orhan2018", "confirm"), GridSpec("orhan2018_stream"),
         GridSpec("orhan2018_size")]
TABLES: dict = {}
FIGURES: dict = {}
