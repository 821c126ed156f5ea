"""Per-block Hessian spectra and block heterogeneity (docs/methods.md §E.7).

    blocks = param_blocks(model)                      # embeddings, each attention, each MLP, norms, convs...
    spec = block_spectra(op, blocks, iters=40, vectors=4)   # one data pass per Lanczos step for all blocks
    het = heterogeneity(spec.spectra)                 # pairwise JS distances; het.mean (Zhang et al. 2024)
"""

from landscape.hessian.blocks.grouping import KINDS, ParamBlock, param_blocks
from landscape.hessian.blocks.heterogeneity import (
    MAX_DISTANCE,
    Heterogeneity,
    heterogeneity,
    js_distance,
    js_divergence,
    pair_densities,
    vector_halves,
)
from landscape.hessian.blocks.restricted import BlockSpectra, RestrictedOperator, block_segments, block_spectra

__all__ = [
    "KINDS", "MAX_DISTANCE", "BlockSpectra", "Heterogeneity", "ParamBlock", "RestrictedOperator", "block_segments",
    "block_spectra", "heterogeneity", "js_distance", "js_divergence", "pair_densities", "param_blocks",
    "vector_halves",
]
