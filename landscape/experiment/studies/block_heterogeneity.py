"""Zhang et al. 2024 (docs/methods.md §E.7): block heterogeneity of resnet1d vs vit1d — the table and figures.

Reads records/block_heterogeneity/ (`landscape.experiment.blocks`), not a grid of the experiment runner, so GRIDS is
empty; the settings and the declared claim come from experiments/block_heterogeneity.toml.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from landscape.experiment import blocks

GRIDS: list = []


@lru_cache(maxsize=4)
def _measured(records: Path, experiments: Path) -> tuple:
    cfg, claim = blocks.load_config(experiments / "block_heterogeneity.toml")
    runs = blocks.load_records(records / "block_heterogeneity")
    blocks.check_seeds(runs, cfg, (cfg.cnn, cfg.transformer))
    summary = blocks.summarize_blocks(runs, cfg, claim)
    return cfg, summary, blocks.figure_panels(summary, runs, cfg)


def table(store) -> str:
    """RESULTS.md's block-heterogeneity table (`blocks.blocks_table`).

    Args:
        store: the records and experiments.

    Returns:
        The markdown.
    """
    cfg, summary, _ = _measured(Path(store.records), Path(store.experiments))
    return blocks.blocks_table(summary, cfg)


def heterogeneity_figure(store, path):
    """The JS-distance matrices and per-seed heterogeneity of the CNN and the transformer.

    Args:
        store: the records and experiments.
        path: the file to write (.png, and .pdf beside it).

    Returns:
        The figure.
    """
    from landscape.plots import plot_block_heterogeneity

    return plot_block_heterogeneity(_measured(Path(store.records), Path(store.experiments))[2], path)


def densities_figure(store, path):
    """The block spectral densities of one seed of each model.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    from landscape.plots import plot_block_densities

    return plot_block_densities(_measured(Path(store.records), Path(store.experiments))[2], path)


TABLES = {"block_heterogeneity": table}
FIGURES = {blocks.FIGURES[0]: heterogeneity_figure, blocks.FIGURES[1]: densities_figure}
