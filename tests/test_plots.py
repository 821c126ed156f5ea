"""landscape.plots: every figure function on small synthetic data draws the expected axes and lines, saves
PNG and PDF, leaves no pyplot figure behind, and names what is missing."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch

from landscape import plots
from landscape.errors import LandscapeError

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


def curves(neg=0.025, eps=1e-3, shift=0.0):
    """Plain spectrum curves as the results module computes them (no engine needed to draw them)."""
    u = np.linspace(-4, 2, 200)
    lam = np.linspace(-1, 10, 300)
    return {"log_grid": u, "log_positive": np.exp(-0.5 * ((u - shift) / 0.3) ** 2),
            "log_negative": 0.1 * np.exp(-0.5 * ((u + 2) / 0.3) ** 2), "grid": lam,
            "density": np.exp(-0.5 * (lam - 5) ** 2) + 1e-9, "degenerate_ratio": 0.5, "negative_ratio": neg, "eps": eps}


def test_training_curves_mean_band_over_seeds_with_n_and_test_accuracy(tmp_path):
    seed = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.2 * e, "test_acc": 0.1 * e} for e in (1, 2, 3)]
    other = [{**r, "train_acc": r["train_acc"] + 0.1} for r in seed[:2]]  # a seed that stopped after epoch 2
    fig = plots.plot_training_curves({"a": [seed, other], "b": seed}, tmp_path / "curves", test=True)
    loss_ax, acc_ax, test_ax = fig.axes
    assert [ln.get_label() for ln in acc_ax.lines] == ["a (n=2)", "b (n=1)"]
    assert [ln.get_linestyle() for ln in test_ax.lines] == [ln.get_linestyle() for ln in acc_ax.lines]  # own styles
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [0.25, 0.45, 0.6])  # nanmean over seeds
    np.testing.assert_allclose(test_ax.lines[0].get_ydata(), [0.1, 0.2, 0.3])
    assert len(acc_ax.collections) == 1  # the two-seed run's ± 1 SD band
    band = acc_ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(0.45 + np.std([0.4, 0.5], ddof=1))  # epoch 2: mean 0.45 ± SD
    assert "± 1 SD" in fig.legends[0].get_title().get_text()
    assert loss_ax.get_yscale() == "log"
    _saved(tmp_path, fig, "curves")


def test_family_by_colour_variant_by_line_style_colour_blind_palette():
    members = {"plain": ("FC", "plain"), "residual": ("FC", "residual"), "vit plain": ("ViT", "plain"),
               "vit residual": ("ViT", "residual")}
    styles = plots.family_styles(members)
    assert styles["plain"]["color"] == styles["residual"]["color"] != styles["vit plain"]["color"]
    assert styles["plain"]["ls"] == styles["vit plain"]["ls"] != styles["residual"]["ls"]
    assert {s["color"] for s in styles.values()} <= set(plots.OKABE_ITO)
    hist = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}, {"epoch": 2, "train_loss": 0.5, "train_acc": 0.7}]
    fig = plots.plot_training_curves({k: hist for k in members}, styles=styles)
    lines = fig.axes[1].lines
    assert [matplotlib.colors.to_hex(ln.get_color()) for ln in lines] == [s["color"].lower() for s in styles.values()]
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
    # ten default lines: colours run out after eight, then the line style changes, so no two look alike
    many = plots.line_styles([f"l{i}" for i in range(10)])
    assert len({(s["color"], str(s["ls"])) for s in many.values()}) == 10


def test_spectral_density_log_view_is_the_default_and_legend_has_negative_mass_at_the_threshold(tmp_path):
    fig = plots.plot_spectral_density({"plain": curves(), "residual": curves(neg=0.0, shift=-1.0)}, tmp_path / "d")
    pos, neg = fig.axes
    assert pos.get_xscale() == neg.get_xscale() == "log" and pos.get_yscale() == "log"
    assert len(pos.lines) == 2 and len(neg.lines) == 2
    np.testing.assert_allclose(pos.lines[0].get_xdata(), 10 ** curves()["log_grid"])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    # the reported negative mass at ε, not the integral of the λ < 0 panel (0.1 * sqrt(2π) * 0.3 ≈ 0.075)
    assert texts == ["plain: degenerate 0.50, negative 0.025 (ε = 0.001)",
                     "residual: degenerate 0.50, negative 0.000 (ε = 0.001)"]
    _saved(tmp_path, fig, "density")


def test_spectral_density_linear_view_draws_the_given_curves():
    fig = plots.plot_spectral_density({"a": curves(), "b": curves(neg=0.1, eps=1e-4)}, view="linear")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_xdata(), curves()["grid"])
    assert ax.lines[1].get_label() == "b: degenerate 0.50, negative 0.100 (ε = 0.0001)"
    with pytest.raises(LandscapeError, match="view must be"):
        plots.plot_spectral_density({"a": curves()}, view="linear-ish")


def test_spectrum_mass_lines_and_exact_markers(tmp_path):
    rows = [{"epoch": e, "spectrum": {"degenerate_ratio": 0.5 + e / 100, "negative_ratio": 0.1, "lambda_max": 1 + e,
                                      "eps": 1e-3}} for e in (0, 10, 20)]
    rows[-1]["exact"] = {"degenerate_ratio": 0.7, "negative_ratio": 0.05, "lambda_max": 22.0}
    fig = plots.plot_spectrum_mass({"plain": rows, "residual": rows[:2]}, tmp_path / "mass")
    deg, neg, lmax = fig.axes
    assert len(deg.lines) == 3  # two SLQ lines + one exact marker set
    np.testing.assert_allclose(deg.lines[0].get_ydata(), [0.5, 0.6, 0.7])
    assert deg.lines[1].get_linestyle() == "None" and list(deg.lines[1].get_ydata()) == [0.7]
    assert lmax.get_yscale() == "log" and "ε = 0.001" in neg.get_title()
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
    # several seeds: the geometric mean per block with a band; transition blocks marked with open squares
    two = [records("grad_ratio", value=lambda b, s: 2.0), records("grad_ratio", value=lambda b, s: 8.0)]
    marked = plots.plot_grad_ratio_grid({"res": two}, at=[0], transitions={"res": ["blocks.1"]})
    ax = marked.axes[0]
    assert ax.get_title() == "res (n=2)"
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), [4.0, 4.0, 4.0])  # sqrt(2 * 8)
    squares = [ln for ln in ax.lines if ln.get_label() == "transition block"]
    assert len(squares) == 1 and list(squares[0].get_xdata()) == [1]


def test_stream_draws_the_transition_point_it_is_given_and_every_seed():
    peak = records("x_norm2", steps=(0, 10, 20, 30), value=lambda b, s: b * (100 - (s - 10) ** 2))
    fig = plots.plot_stream(peak + records("cos_x_out", steps=(0, 10, 20, 30)), metrics=("x_norm2", "cos_x_out"),
                            transition=20)
    for ax in fig.axes:
        marks = [ln for ln in ax.lines if ln.get_label().startswith("transition")]
        assert len(marks) == 1 and marks[0].get_xdata()[0] == 20  # drawn where given, not recomputed
    unmarked = plots.plot_stream(peak, metrics=("x_norm2",)).axes[0].lines
    assert not any(ln.get_label().startswith("transition") for ln in unmarked)
    seeds = [records("x_norm2"), records("x_norm2", value=lambda b, s: 2.0 + b)]
    cmp = plots.plot_stream_compare({"linear": seeds, "ortho": records("x_norm2")}, metrics=("x_norm2",),
                                    transitions={"linear": 10, "ortho": None})
    assert len(cmp.axes) == 2 and cmp.axes[0].get_yscale() == "log"
    # one line per site: the mean over seeds (band ± 1 SD), not one line per site and seed
    assert [len(_data_lines(ax)) for ax in cmp.axes] == [3, 3] and len(cmp.axes[0].collections) == 3
    np.testing.assert_allclose(_data_lines(cmp.axes[0])[0].get_ydata(),
                               np.sqrt(np.array(_data_lines(cmp.axes[1])[0].get_ydata()) * np.array(
                                   [r["value"] for r in seeds[1] if r["block"] == "blocks.0"])))  # geometric mean
    many = records("x_norm2", blocks=12)
    few = plots.plot_stream_compare({"deep": many}, metrics=("x_norm2",), max_sites=4)
    assert [ln.get_label() for ln in _data_lines(few.axes[0])] == ["blocks.0", "blocks.4", "blocks.7", "blocks.11"]
    assert cmp.axes[0].get_ylabel().startswith("linear (n=2)") and cmp.axes[1].get_ylabel().startswith("ortho (n=1)")
    assert [ln.get_xdata()[0] for ax in cmp.axes for ln in ax.lines if ln.get_label().startswith("transition")] \
        == [10]


def test_singularity_compare_block_means_per_run_and_seed_band(tmp_path):
    fig = plots.plot_singularity_compare({"plain": records("dead_frac"), "res": records("dead_frac", blocks=2)},
                                         metrics=("dead_frac",), path=tmp_path / "sing")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "epoch" and ax.get_title() == plots.LABELS["dead_frac"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.0, 3.0, 4.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.5, 2.5, 3.5])
    seeds = plots.plot_singularity_compare({"plain": [records("dead_frac"), records("dead_frac", blocks=2)]},
                                           metrics=("dead_frac",))
    line = seeds.axes[0].lines[0]
    assert line.get_label() == "plain (n=2)" and len(seeds.axes[0].collections) == 1
    np.testing.assert_allclose(line.get_ydata(), [1.75, 2.75, 3.75])  # mean of the seeds' block means
    with pytest.raises(LandscapeError, match="eff_rank"):
        plots.plot_singularity_compare({"plain": records("dead_frac")}, metrics=("eff_rank",))


def test_sweep_mean_sd_n_diverged_marks_and_reference(tmp_path):
    panels = {"xSkip": {"xSkip": {0.5: 1.0, 1: [2.0, 4.0], 3: None}, "xSkip+LN": {0.5: 0.5, 1: 0.4, 3: 0.3}},
              "rSkip+LN": {"rSkip+LN": {1: 0.4, 2: 0.35}}}
    fig = plots.plot_sweep(panels, tmp_path / "sweep", ylabel="final training loss", xlabel=["λ", "K"], logy=True,
                           reference={"xSkip": ([0.5, 1, 3], [0.5**9, 1.0, 3.0**9])})
    left, right = fig.axes
    curves = [ln for ln in left.lines if ln.get_linestyle() not in ("None", "--")]
    # a log axis: the geometric mean with bars of ± 1 SD of log10, which never reach 0
    np.testing.assert_allclose(curves[0].get_ydata(), [1.0, np.sqrt(8.0)])
    errbar = left.containers[0]
    sd = np.std(np.log10([2.0, 4.0]), ddof=1)
    np.testing.assert_allclose(errbar.lines[2][0].get_segments()[1][:, 1], np.sqrt(8.0) * 10.0 ** np.array([-sd, sd]))
    assert "± 1 SD of log10" in left.get_legend().get_title().get_text()
    linear = plots.plot_sweep({"p": {"a": {1: [2.0, 4.0]}}}, ylabel="y")
    np.testing.assert_allclose(linear.axes[0].containers[0].lines[2][0].get_segments()[0][:, 1],
                               [3.0 - np.sqrt(2), 3.0 + np.sqrt(2)])
    crosses = [ln for ln in left.lines if ln.get_label().endswith("diverged")]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [3.0]
    assert right.get_xlabel() == "K" and left.get_yscale() == "log"
    assert [c.get_label() for c in left.containers] == ["xSkip (n=2)", "xSkip+LN (n=1)"]
    assert [ln.get_label() for ln in left.lines if ln.get_linestyle() == "--"] == ["reference"]


def test_metric_scatter_spearman_with_interval_and_readable_labels():
    points = {f"run{i}": {"train_acc": i / 10, "dead_frac_mean": 1 - i / 10, "eff_rank_mean": None} for i in range(5)}
    fig = plots.plot_metric_scatter(points, "train_acc", ["dead_frac_mean", "eff_rank_mean"])
    assert fig.axes[0].get_title().startswith("Spearman ρ = -1.00") and "(n = 5)" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() == "training accuracy"
    assert fig.axes[0].get_ylabel() == "dead units (fraction), block mean"
    assert fig.axes[1].get_title().endswith("no data")


def test_readable_labels():
    assert plots.label_of("slq_degenerate_ratio") == "degenerate mass (SLQ)"
    assert plots.label_of("init.grad_gain").endswith("at init")
    assert plots.label_of("some_new_key") == "some new key"


def test_missing_inputs_are_named():
    with pytest.raises(LandscapeError, match="log_grid, log_positive, log_negative"):
        plots.plot_spectral_density({"a": {"nodes": [1.0], "weights": [1.0]}})
    with pytest.raises(LandscapeError, match="grad_ratio"):
        plots.plot_grad_ratio_grid({"a": records("x_norm2")})
    with pytest.raises(LandscapeError, match="no runs"):
        plots.plot_stream_compare({})


def test_all_figures_use_figure_objects_not_pyplot():
    fig = plots.plot_grad_ratio(records("grad_ratio"))
    assert isinstance(fig, matplotlib.figure.Figure) and fig.canvas.manager is None
    assert all(isinstance(ln, Line2D) for ln in fig.axes[0].lines)
