"""The figures of Orhan & Pitkow 2018's study (docs/methods.md §A), registered by
`landscape.experiment.studies.orhan2018`: training curves of every ablation, the Hessian's spectral densities,
degenerate and negative masses, exact eigenvalues, and the unit singularities.
"""

from __future__ import annotations

from landscape import plots
from landscape.experiment.records import exact_eigenvalues, spectrum
from landscape.experiment.studies.orhan2018_cells import CORRELATIONS, MAIN, RHO, STREAM_RHO, cell_mean
from landscape.experiment.summary import fmt
from landscape.hessian.cli.curves import spectrum_curves
from landscape.plots.style import ramp


def _rho_styles(cells: dict, extra: dict) -> dict:
    """One sequential colour scale for rho (dark: identity skip, light: no skip); other skips Okabe-Ito, dashed."""
    colours = ramp(len(cells))
    out = {name: {"color": c, "ls": "-"} for name, c in zip(cells, colours)}
    for i, name in enumerate(extra):
        out[name] = {"color": plots.OKABE_ITO[3 + i], "ls": "--"}
    return out


def _training(store, grid: str, cells: list[str], path, title: str, styles=None, names=None):
    g = store.grid(grid)
    names = names or {c: c for c in cells}
    return plots.plot_training_curves({names[c]: g.histories(c) for c in cells if c in g.cells()}, path, test=True,
                                      styles=styles, title=title)


def training(store, path):
    """Training curves of the main cells (postact FC nets 10 × 16 with and without skips).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    return _training(store, "orhan2018", MAIN, path, "postact FC nets 10 x 16 with and without skips "
                     "(stream grows with depth, §A.3)")


def training_controls(store, path):
    """Training curves of the controls: init gain, branch scale and LayerNorm (colour: net, line style: variant).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    variant = {"plain": "none", "residual": "none", "gain_plain_0.5": "init gain 0.5", "gain_residual_0.5":
               "init gain 0.5", "branch_scale_0.1": "x + 0.1 z", "branch_scale_0.3": "x + 0.3 z", "ln_0": "LN",
               "ln_1": "LN"}
    styles = plots.family_styles({c: ("plain" if c in ("plain", "gain_plain_0.5", "ln_0") else "residual", v)
                                  for c, v in variant.items()})
    return _training(store, "orhan2018", list(variant), path,
                     "stream-scale controls (colour: net, line style: control)", styles)


def training_biasreg_malicious(store, path):
    """Training curves of the malicious initializations (W − I, half dead units) beside the plain and residual nets.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    cells = ["plain", "residual", "malicious_cancel", "malicious_dead"]
    styles = plots.family_styles({"plain": ("plain", "none"), "residual": ("residual", "none"),
                                  "malicious_cancel": ("residual", "W - I init"),
                                  "malicious_dead": ("residual", "half dead init")})
    return _training(store, "orhan2018", cells, path, "malicious initializations (colour: net, line style: init)",
                     styles)


def biasreg_training(store, path):
    """Training curves of the bias-regularized nets, one line style per λ_b.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("orhan2018")
    cells = ["plain", "residual"] + [c for c in g.cells() if c.startswith("biasreg")]
    fam = lambda c: "plain" if "plain" in c else "residual"  # noqa: E731
    styles = plots.family_styles({c: (fam(c), "λ_b = 0" if c in ("plain", "residual") else
                                      f"λ_b = {c.rpartition('_')[2]}") for c in cells})
    return _training(store, "orhan2018", cells, path, "BiasReg strength (colour: net, line style: λ_b)", styles)


def rho_training(store, path):
    """Training curves of the degenerate dense skips (a fraction ρ of the skip's eigenvalues zero).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    names = {c: f"ρ = {r:g}" + (" (residual)" if r == 0 else " (plain)" if r == 1 else "") for c, r in RHO.items()}
    names["dense_orth"] = "full-rank orthogonal skip"
    styles = _rho_styles({names[c]: r for c, r in RHO.items()}, {names["dense_orth"]: None})
    return _training(store, "orhan2018", [*RHO, "dense_orth"], path,
                     "postact nets: degenerate dense skip, a fraction ρ of its eigenvalues zero (one colour scale)",
                     styles, names)


def stream_training(store, path):
    """Training curves of the stream-controlled grid: degenerate skips, hyper-residual and orthogonal skips.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    names = {c: f"ρ = {r:g}" + (" (identity skip)" if r == 0 else " (plain)" if r == 1 else "")
             for c, r in STREAM_RHO.items()}
    names |= {"hyper": "hyper-residual", "dense_orth": "full-rank orthogonal skip"}
    styles = _rho_styles({names[c]: r for c, r in STREAM_RHO.items()}, {names["hyper"]: None,
                                                                         names["dense_orth"]: None})
    return _training(store, "orhan2018_stream", [*STREAM_RHO, "hyper", "dense_orth"], path,
                     "stream-controlled pre-activation nets (LN, 1/√L): ρ ablation and other skips", styles, names)


def size_training(store, path):
    """Training curves of the 20 × 128 postact nets.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("orhan2018_size")
    return _training(store, "orhan2018_size", g.cells(), path, "20 x 128 postact nets")


def _masses(store, cells) -> dict:
    """label → legend text with the SLQ masses' mean ± SD over seeds (what the tables report)."""
    s = store.summary("orhan2018")
    out = {}
    for c in cells:
        row = next(r for r in s["cells"] if r["cell"] == c)
        d, n = row["final"]["slq_degenerate_ratio"], row["final"]["slq_negative_ratio"]
        out[c] = (f"degenerate {fmt(d['mean'])} ± {fmt(d['std'], 1)}, negative {fmt(n['mean'], 2)} "
                  f"(mean ± SD of n = {d['n']})")
    return out


def _curves(store) -> dict:
    g = store.grid("orhan2018")
    masses = _masses(store, MAIN)
    out = {}
    for c in MAIN:
        curve = spectrum_curves(spectrum(g.cell_runs(c)[0]))
        out[f"{c}, seed 0 curve; {masses[c]}"] = {k: v for k, v in curve.items()
                                                  if k not in ("degenerate_ratio", "negative_ratio")}
    return out


def log_density(store, path):
    """The SLQ Hessian spectral densities at the end of training, over log10|λ|.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    return plots.plot_spectral_density(_curves(store), path, title="Hessian spectral density at the end of training "
                                       "(SLQ), over log10|λ|")


def density(store, path):
    """The same densities on a linear λ axis.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    return plots.plot_spectral_density(_curves(store), path, view="linear",
                                       title="the same densities on a linear λ axis")


def spectrum_mass(store, path):
    """The degenerate and negative Hessian mass over training (seed 0 of each main cell).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("orhan2018")
    rows = {f"{c} (seed 0)": [{"epoch": int(e), **{k: m[k] for k in ("spectrum", "exact") if k in m}}
                              for e, m in g.cell_runs(c)[0]["measure"].items()] for c in MAIN}
    return plots.plot_spectrum_mass(rows, path, title="degenerate and negative Hessian mass over training (seed 0)")


def exact_eigen(store, path):
    """The exact Hessian eigenvalues of seed 0 of each main cell, sorted by magnitude.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("orhan2018")
    s = store.summary("orhan2018")
    eig, legend = {}, {}
    for c in MAIN:
        e = exact_eigenvalues(g.cell_runs(c)[0])
        if e is None:
            continue
        row = next(r for r in s["cells"] if r["cell"] == c)
        d, z = row["final"]["exact_degenerate_ratio"], row["final"]["exact_null_ratio"]
        eig[f"{c} (seed 0)"] = e
        legend[f"{c} (seed 0)"] = (f"degenerate {fmt(d['mean'])}, below 1e-7 λmax {fmt(z['mean'])} "
                                   f"(means of n = {d['n']})")
    return plots.plot_eigenvalue_histogram(eig, path, eps=1e-3, legend=legend,
                                           title="exact Hessian eigenvalues at the end of training")


def singularity(store, path):
    """Unit singularities over training (block means): dead units, overlaps, effective rank, small singular values.

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    g = store.grid("orhan2018")
    metrics = ("dead_frac", "overlap_act", "overlap_act_centered", "eff_rank", "small_sv_frac")
    return plots.plot_singularity_compare({c: g.epoch_records(c) for c in MAIN}, metrics, path=path,
                                          title="unit singularities over training (block means)")


def accuracy_vs_singularity(store, path):
    """Training accuracy against each singularity statistic across the grid's cells (one point per cell mean).

    Args:
        store: the records and experiments.
        path: the file to write.

    Returns:
        The figure.
    """
    s = store.summary("orhan2018")
    keys = [k for k, _ in CORRELATIONS]
    points = {r["cell"]: {k: cell_mean(s, r["cell"], k) for k in ["train_acc", *keys]} for r in s["cells"]}
    return plots.plot_metric_scatter(points, "train_acc", keys, path,
                                     title="across the grid's cells (each point a cell mean of 5 seeds; "
                                           "exploratory): training accuracy vs singularity")


FIGURES = {"orhan2018_training": training, "orhan2018_training_controls": training_controls,
           "orhan2018_training_biasreg_malicious": training_biasreg_malicious,
           "orhan2018_biasreg_training": biasreg_training, "orhan2018_rho_training": rho_training,
           "orhan2018_stream_training": stream_training, "orhan2018_size_training": size_training,
           "orhan2018_log_density": log_density, "orhan2018_density": density,
           "orhan2018_spectrum_mass": spectrum_mass, "orhan2018_exact_eigenvalues": exact_eigen,
           "orhan2018_singularity": singularity, "orhan2018_accuracy_vs_singularity": accuracy_vs_singularity}
