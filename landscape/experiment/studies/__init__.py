"""One module per study: the grids it reads, the RESULTS.md tables and the figures it registers
(`landscape.experiment.registry` lists them; each module holds GRIDS, TABLES and FIGURES)."""
