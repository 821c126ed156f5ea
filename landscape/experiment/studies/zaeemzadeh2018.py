"""Zaeemzadeh et al. 2018/2020 (docs/methods.md §C): norm preservation — the grids, tables and figures."""

from landscape.experiment.registry import GridSpec

GRIDS = [GridSpec("zaeemzadeh2018_transitions"), GridSpec("zaeemzadeh2018_transitions", "confirm"),
         GridSpec("zaeemzadeh2018"), GridSpec("zaeemzadeh2018", "confirm")]
TABLES: dict = {}
FIGURES: dict = {}
