"""Oh et al. 2025 (docs/methods.md §B): orthogonal vs linear residual updates — the grids, tables and figures."""

from landscape.experiment.registry import GridSpec

GRIDS = [GridSpec("oh2025"), GridSpec("oh2025", "confirm"), GridSpec("oh2025_mechanism")]
TABLES: dict = {}
FIGURES: dict = {}
