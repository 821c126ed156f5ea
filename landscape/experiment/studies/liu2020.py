"""Liu et al. 2020 (docs/methods.md §D): xSkip, LN and rSkip — the grids, tables and figures."""

from landscape.experiment.registry import GridSpec

GRIDS = [GridSpec("liu2020_transformer"), GridSpec("liu2020"), GridSpec("liu2020", "confirm")]
TABLES: dict = {}
FIGURES: dict = {}
