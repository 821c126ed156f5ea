"""Figures from plain results (dicts, lists of records, numpy arrays), never from models or engines.

Every function draws on a fresh `matplotlib.figure.Figure` (no pyplot state, any backend) in a light
seaborn style with Okabe-Ito colour-blind-safe colours, optionally saves it as PATH.png and PATH.pdf
(`save_figure`), and returns it so a notebook can show it. Lines of several seeds are drawn as a mean
with a band or all at once, with n in the legend; `family_styles` gives family by colour and variant by
line style. Inputs are what `landscape.experiment` writes (runs/NAME/CELL/seedS/) or what its results
module computes from them (spectrum curves, transition points):

    training    plot_training_curves        metrics.jsonl rows, one run or several seeds per label
    (training)  plot_sweep                  a final value against a swept setting (λ, K, depth), ± SD, n
                plot_metric_scatter         one metric against others across runs, Spearman ρ with its interval
    spectra     plot_spectral_density       density curves: log10|λ| view (default) or linear λ view
                plot_log_spectral_density   the log view
                plot_spectrum_mass          degenerate / negative mass and λmax over training
                plot_eigenvalue_histogram   exact eigenvalues on a symlog axis
    curvature   plot_eos                    loss and sharpness side by side per step size, with each η's limit
                plot_edge_summary           the edge ratio per cell against the step size, log-scale intervals
    landscapes  plot_contour_grid           several surfaces' log contours on one colour scale
                plot_surface_3d_grid        the same as 3-D meshes of log10 loss, one z range
                plot_value_maps             Li's |λmin/λmax| maps, one log colour scale
                plot_family_series          a statistic against depth per family and variant, with intervals
                plot_family_curves          1-D curves per family and variant, mean ± SD band
    blocks      plot_block_heterogeneity    pairwise JS distances of block spectra, heterogeneity per seed
                plot_block_densities        every block's spectral density, coloured by block kind
    probes      plot_grad_ratio             r_l = ‖∂L/∂x_l‖ / ‖∂L/∂x_{l+1}‖ per block, log axis
                plot_grad_ratio_grid        the same, one panel per run
                plot_stream, plot_stream_compare   stream statistics vs step, with a given transition point
                plot_singularity, plot_singularity_compare   unit statistics vs epoch
    style       save_figure, family_styles, line_styles, label_of, LABELS, OKABE_ITO, and for new figure
                modules: styled (decorator: the shared style), finish (title, save), PathLike
"""

from landscape.plots.blocks import plot_block_densities, plot_block_heterogeneity
from landscape.plots.curvature import plot_edge_summary, plot_eos
from landscape.plots.landscapes import (
                                    plot_contour_grid,
                                    plot_family_curves,
                                    plot_family_series,
                                    plot_surface_3d_grid,
                                    plot_value_maps,
)
from landscape.plots.probes import (
                                    plot_grad_ratio,
                                    plot_grad_ratio_grid,
                                    plot_singularity,
                                    plot_singularity_compare,
                                    plot_stream,
                                    plot_stream_compare,
)
from landscape.plots.spectra import (
                                    plot_eigenvalue_histogram,
                                    plot_log_spectral_density,
                                    plot_spectral_density,
                                    plot_spectrum_mass,
)
from landscape.plots.style import (
                                    LABELS,
                                    OKABE_ITO,
                                    PathLike,
                                    family_styles,
                                    finish,
                                    label_of,
                                    line_styles,
                                    save_figure,
                                    styled,
)
from landscape.plots.surface import plot_surface_1d, plot_surface_3d, plot_surface_contour
from landscape.plots.training import plot_metric_scatter, plot_sweep, plot_training_curves

__all__ = [
    "LABELS",
    "OKABE_ITO",
    "PathLike",
    "family_styles",
    "finish",
    "label_of",
    "line_styles",
    "plot_block_densities",
    "plot_block_heterogeneity",
    "plot_contour_grid",
    "plot_edge_summary",
    "plot_eos",
    "plot_family_curves",
    "plot_family_series",
    "plot_eigenvalue_histogram",
    "plot_grad_ratio",
    "plot_grad_ratio_grid",
    "plot_log_spectral_density",
    "plot_metric_scatter",
    "plot_singularity",
    "plot_singularity_compare",
    "plot_spectral_density",
    "plot_spectrum_mass",
    "plot_stream",
    "plot_stream_compare",
    "plot_surface_1d",
    "plot_surface_3d",
    "plot_surface_3d_grid",
    "plot_surface_contour",
    "plot_value_maps",
    "plot_sweep",
    "plot_training_curves",
    "save_figure",
    "styled",
]
