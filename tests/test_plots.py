"""landscape.plots: every figure function on small synthetic data draws the expected axes and lines, saves
PNG and PDF, leaves no pyplot figure behind, and names what is missing."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch

from landscape import plots
from landscape.errors import LandscapeError
from landscape.hessian import SpectralDensity

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _no_pyplot_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _saved(tmp_path, fig, name):
    paths = plots.save_figure(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def _data_lines(ax):
    """Lines with data (not reference lines drawn with axhline/axvline, which have 2 points in axes coords)."""
    return [ln for ln in ax.lines if ln.get_transform() == ax.transData]


def records(metric, blocks=3, steps=(0, 10, 20), value=lambda b, s: 1.0 + b + s / 10):
    return [{"step": s, "epoch": s // 10, "block": f"blocks.{b}", "metric": metric, "value": value(b, s)}
            for s in steps for b in range(blocks)]


def spectrum(seed=0, probes=3, iters=12, scale=10.0):
    rng = np.random.default_rng(seed)
    nodes = np.sort(rng.normal(0, 0.01, (probes, iters)), axis=1)
    nodes[:, -1] = scale
    nodes[:, 0] = -0.05 * scale
    w = rng.random((probes, iters))
    return {"nodes": nodes, "weights": w / w.sum(axis=1, keepdims=True)}


def test_training_curves_mean_band_over_seeds_and_test_accuracy(tmp_path):
    seed = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.2 * e, "test_acc": 0.1 * e} for e in (1, 2, 3)]
    other = [{**r, "train_acc": r["train_acc"] + 0.1} for r in seed[:2]]  # a seed that stopped after epoch 2
    fig = plots.plot_training_curves({"a": [seed, other], "b": seed}, tmp_path / "curves", test=True)
    loss_ax, acc_ax = fig.axes
    assert [ln.get_label() for ln in acc_ax.lines] == ["a", "a (test)", "b", "b (test)"]
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [0.25, 0.45, 0.6])  # nanmean over seeds
    assert len(acc_ax.collections) == 2  # min-max bands of the two-seed run (train and test)
    assert loss_ax.get_yscale() == "log"
    _saved(tmp_path, fig, "curves")


def test_spectral_density_linear_grid_one_line_per_spectrum(tmp_path):
    sd = SpectralDensity(**spectrum(1), dim=12)
    fig = plots.plot_spectral_density({"plain": spectrum(0), "residual": sd, "npz": {
        "slq_nodes": spectrum(2)["nodes"], "slq_weights": spectrum(2)["weights"]}})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 3
    x = ax.lines[0].get_xdata()
    assert x.min() < -0.5 and x.max() > 10  # one grid over every spectrum's range
    for line, s in zip(ax.lines, [spectrum(0), spectrum(1), spectrum(2)]):  # integrates to ~1 (clipped tails aside)
        assert np.trapezoid(line.get_ydata(), line.get_xdata()) == pytest.approx(1.0, abs=0.02)
        degenerate = SpectralDensity(s["nodes"], s["weights"], 12).degenerate_ratio()
        assert f"degenerate {degenerate:.2f}" in line.get_label()
    _saved(tmp_path, fig, "density")


def test_log_spectral_density_positive_and_negative_panels():
    only_positive = spectrum(3)
    only_positive["nodes"] = np.abs(only_positive["nodes"]) + 1e-3
    fig = plots.plot_log_spectral_density({"a": spectrum(0), "b": only_positive})
    pos, neg = fig.axes
    assert pos.get_xscale() == "log" and pos.get_yscale() == "log"
    assert len(pos.lines) == 2 and len(neg.lines) == 1  # b has no negative eigenvalues
    assert "mass 1.00" in pos.lines[1].get_label()


def test_spectrum_mass_lines_and_exact_markers(tmp_path):
    rows = [{"epoch": e, "spectrum": {"degenerate_ratio": 0.5 + e / 100, "negative_ratio": 0.1, "lambda_max": 1 + e}}
            for e in (0, 10, 20)]
    rows[-1]["exact"] = {"degenerate_ratio": 0.7, "negative_ratio": 0.05, "lambda_max": 22.0}
    fig = plots.plot_spectrum_mass({"plain": rows, "residual": rows[:2]}, tmp_path / "mass")
    deg, neg, lmax = fig.axes
    assert len(deg.lines) == 3  # two SLQ lines + one exact marker set
    np.testing.assert_allclose(deg.lines[0].get_ydata(), [0.5, 0.6, 0.7])
    assert deg.lines[1].get_linestyle() == "None" and list(deg.lines[1].get_ydata()) == [0.7]
    assert lmax.get_yscale() == "log"
    with pytest.raises(LandscapeError, match="no spectrum"):
        plots.plot_spectrum_mass({"x": [{"epoch": 0}]})


def test_eigenvalue_histogram_symlog_fractions(tmp_path):
    a = np.concatenate([np.zeros(50), np.linspace(1, 100, 40), -np.linspace(0.5, 2, 10)])
    b = np.linspace(-1, 50, 30)
    fig = plots.plot_eigenvalue_histogram({"a": a, "b": b}, tmp_path / "hist")
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    stairs = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(stairs) == 2
    assert stairs[0].get_data().values.sum() == pytest.approx(1.0)
    assert "degenerate 0.50, negative 0.100" in stairs[0].get_label()
    with pytest.raises(LandscapeError, match="eigenvalue"):
        plots.plot_eigenvalue_histogram({"a": []})


def test_grad_ratio_by_epoch_and_grid(tmp_path):
    recs = records("grad_ratio")
    fig = plots.plot_grad_ratio(recs, key="epoch", path=tmp_path / "ratio")
    assert [ln.get_label() for ln in _data_lines(fig.axes[0])] == ["epoch 0", "epoch 1", "epoch 2"]
    grid = plots.plot_grad_ratio_grid({"plain": recs, "residual": recs, "deep": records("grad_ratio", blocks=30)},
                                      at=[0, 2], ncols=2)
    visible = [ax for ax in grid.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["plain", "residual", "deep"]
    assert all(ax.get_yscale() == "log" and len(_data_lines(ax)) == 2 for ax in visible)
    assert len(visible[2].lines[0].get_xdata()) == 30
    _saved(tmp_path, grid, "grid")


def test_stream_transition_point_marks_the_peak_of_the_last_site():
    peak = records("x_norm2", steps=(0, 10, 20, 30), value=lambda b, s: b * (100 - (s - 10) ** 2))
    fig = plots.plot_stream(peak + records("cos_x_out", steps=(0, 10, 20, 30)), metrics=("x_norm2", "cos_x_out"),
                            transition=True)
    for ax in fig.axes:
        marks = [ln for ln in ax.lines if ln.get_label().startswith("transition")]
        assert len(marks) == 1 and marks[0].get_xdata()[0] == 10
    cmp = plots.plot_stream_compare({"linear": peak, "ortho": records("x_norm2")}, metrics=("x_norm2",))
    assert len(cmp.axes) == 2 and cmp.axes[0].get_yscale() == "log"
    assert [len(_data_lines(ax)) for ax in cmp.axes] == [3, 3]
    assert {ln.get_xdata()[0] for ax in cmp.axes for ln in ax.lines if ln.get_label().startswith("transition")} \
        == {10, 20}


def test_singularity_compare_block_means_per_run(tmp_path):
    fig = plots.plot_singularity_compare({"plain": records("dead_frac"), "res": records("dead_frac", blocks=2)},
                                         metrics=("dead_frac",), path=tmp_path / "sing")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.0, 3.0, 4.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.5, 2.5, 3.5])
    with pytest.raises(LandscapeError, match="eff_rank"):
        plots.plot_singularity_compare({"plain": records("dead_frac")}, metrics=("eff_rank",))


def test_sweep_mean_std_and_diverged_marks(tmp_path):
    panels = {"xSkip": {"xSkip": {0.5: 1.0, 1: [2.0, 4.0], 3: None}, "xSkip+LN": {0.5: 0.5, 1: 0.4, 3: 0.3}},
              "rSkip+LN": {"rSkip+LN": {1: 0.4, 2: 0.35}}}
    fig = plots.plot_sweep(panels, tmp_path / "sweep", ylabel="final training loss", xlabel=["λ", "K"], logy=True)
    left, right = fig.axes
    curves = [ln for ln in left.lines if ln.get_linestyle() != "None"]
    np.testing.assert_allclose(curves[0].get_ydata(), [1.0, 3.0])
    crosses = [ln for ln in left.lines if ln.get_label().endswith("diverged")]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [3.0]
    assert right.get_xlabel() == "K" and left.get_yscale() == "log"
    assert [c.get_label() for c in left.containers] == ["xSkip", "xSkip+LN"]


def test_metric_scatter_spearman_in_title():
    points = {f"run{i}": {"train_acc": i / 10, "dead_frac": 1 - i / 10, "eff_rank": None} for i in range(5)}
    fig = plots.plot_metric_scatter(points, "train_acc", ["dead_frac", "eff_rank"])
    assert "ρ = -1.00 (n = 5)" in fig.axes[0].get_title()
    assert fig.axes[1].get_title() == "eff_rank: no data"
    assert math.isnan(plots._spearman(np.ones(4), np.arange(4.0)))


def test_missing_inputs_are_named():
    with pytest.raises(LandscapeError, match="nodes and weights"):
        plots.plot_spectral_density({"a": {"eigs": [1.0]}})
    with pytest.raises(LandscapeError, match="grad_ratio"):
        plots.plot_grad_ratio_grid({"a": records("x_norm2")})
    with pytest.raises(LandscapeError, match="no runs"):
        plots.plot_stream_compare({})


def test_all_figures_use_figure_objects_not_pyplot():
    fig = plots.plot_grad_ratio(records("grad_ratio"))
    assert isinstance(fig, matplotlib.figure.Figure) and fig.canvas.manager is None
    assert all(isinstance(ln, Line2D) for ln in fig.axes[0].lines)
