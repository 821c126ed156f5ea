"""landscape.plots' comparison figures (Li et al.'s depth series, Cohen et al.'s sweep): one colour scale per
figure, log colour bars that say so, 3-D surfaces not clipped, family by colour and variant by line style,
n and the band or bar type in every legend, loss and sharpness side by side."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import LogNorm

from landscape import plots

matplotlib.use("Agg")

AXIS = np.array([-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0])
X, Y = np.meshgrid(AXIS, AXIS)


def surfaces() -> dict:
    return {"flat": (AXIS, 0.1 + X**2 + Y**2), "sharp": (AXIS, 0.01 + 100 * (X**2 + Y**2))}


def test_contour_grid_shares_one_log_colour_scale_labelled_log(tmp_path):
    fig = plots.plot_contour_grid(surfaces(), tmp_path / "c", points=[(0.0, 0.0), (0.5, 0.5)])
    norms = [c.norm for ax in fig.axes for c in ax.collections if isinstance(getattr(c, "norm", None), LogNorm)]
    assert norms and {(n.vmin, n.vmax) for n in norms} == {(0.01, 200.01)}   # the range of both surfaces
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "loss (log scale)"]
    assert len(bars) == 1 and (tmp_path / "c.png").exists() and (tmp_path / "c.pdf").exists()


def test_3d_grid_draws_log10_loss_on_one_z_range_without_clipping(tmp_path):
    fig = plots.plot_surface_3d_grid(surfaces(), tmp_path / "s")
    axes = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_zlim() == pytest.approx((np.log10(0.01), np.log10(200.01)))   # the highest point drawn
        assert ax.get_zlabel() == "log10 loss"


def test_value_maps_share_a_log_scale_floored_at_the_resolution(tmp_path):
    axis = (-0.5, 0.0, 0.5)
    panels = {"a": (axis, np.full((3, 3), 1e-5)), "b": (axis, np.array([[0.2, 0.01, 0.0], [0.0, 0.0, 0.0],
                                                                         [0.0, 0.0, 0.5]]))}
    fig = plots.plot_value_maps(panels, tmp_path / "m", floor=1e-3)
    ims = [im for ax in fig.axes for im in ax.images]
    assert len(ims) == 2 and all(im.norm.vmin == 1e-3 and im.norm.vmax == 0.5 for im in ims)
    assert ims[0].get_array().min() == 1e-3                       # below the floor: drawn at it
    assert any("log scale" in ax.get_ylabel() for ax in fig.axes)


def test_family_series_and_curves_style_by_family_and_variant_with_n_in_the_legend(tmp_path):
    styles = {"ResNet, shortcuts": ("resnet", "short"), "ResNet, no shortcuts": ("resnet", "noshort"),
              "FC, shortcuts": ("fc", "short")}
    est = {"estimate": [0.01, 0.1], "low": [0.005, 0.05], "high": [0.02, 0.2], "n": [5, 4]}
    series = {lab: {"x": [20, 56], "k": est} for lab in styles}
    fig = plots.plot_family_series(series, styles, tmp_path / "f", keys=["k"], ylabels=["k"], log=[True])
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}      # errorbar containers: data lines
    assert set(lines) == {f"{lab} (n=4, bars 95% CI)" for lab in styles}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(lines)
    short, noshort, fc = (lines[f"{lab} (n=4, bars 95% CI)"] for lab in styles)
    assert short.get_color() == noshort.get_color() != fc.get_color()
    assert short.get_linestyle() != noshort.get_linestyle() and short.get_linestyle() == fc.get_linestyle()
    curves = {"depth 20": {lab: (AXIS, np.vstack([X[3], X[3] * 2]) ** 2 + 0.1) for lab in styles}}
    fig = plots.plot_family_curves(curves, styles, tmp_path / "g")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert all("(n=2, band ± SD of log10)" in t for t in labels) and fig.axes[0].get_yscale() == "log"


def test_eos_draws_loss_and_sharpness_side_by_side_with_each_limit(tmp_path):
    steps = np.arange(0, 50, 10)
    loss = np.array([[1.0, 0.5, 0.3, 0.2, 0.1], [1.1, 0.6, 0.3, np.nan, np.nan]])
    sharp = np.array([[1.0, 2.0, 3.9, 4.1, 4.0], [1.2, 2.2, 4.0, np.nan, np.nan]])
    rows = {"FC, square loss": {0.5: (steps, loss, sharp, 4.0), 1.0: (steps, loss, sharp / 2, 2.0)}}
    fig = plots.plot_eos(rows, tmp_path / "e")
    ax_loss, ax_sharp = fig.axes[:2]
    assert ax_loss.get_ylabel() == "training loss" and "sharpness" in ax_sharp.get_ylabel()
    assert ax_loss.get_position().y0 == pytest.approx(ax_sharp.get_position().y0)        # side by side
    limits = sorted(ln.get_ydata()[0] for ln in ax_sharp.get_lines() if ln.get_linestyle() == "--")
    assert limits == [2.0, 4.0]
    assert all("(n=2, band ± SD of log10)" in t.get_text() for t in ax_loss.get_legend().get_texts())


def test_edge_summary_has_log_axes_the_band_and_log_t_bars(tmp_path):
    series = {"FC, gd, square loss": {"x": [0.35, 1.4], "estimate": [0.5, 1.05], "low": [0.3, 0.95],
                                      "high": [0.8, 1.2], "n": [5, 5]}}
    fig = plots.plot_edge_summary(series, {"FC, gd, square loss": (0, 0)}, tmp_path / "s")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "band [0.8, 1.25]" in texts and any("bars 95% CI, log-t" in t and "n=5" in t for t in texts)
