"""Probe figures take plain records (no model), draw one line per step / block, and name what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.plots import LABELS, plot_grad_ratio, plot_singularity, plot_stream
from landscape.probes import make_record


def recs(metric, blocks=3, steps=(0, 10, 20), **extra):
    return [{**make_record(s, f"blocks.{b}", metric, 1.0 + b + s / 10), **extra}
            for s in steps for b in range(blocks)]


def test_grad_ratio_log_axis_one_line_per_step_and_bounds(tmp_path):
    records = recs("grad_ratio") + recs("jac_sigma_max", steps=(20,)) + recs("jac_sigma_min", steps=(20,))
    fig = plot_grad_ratio(records)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    data = [line for line in ax.lines if len(line.get_xdata()) == 3]
    assert len(data) == 5  # three steps + two bounds
    np.testing.assert_allclose(data[0].get_ydata(), [1.0, 2.0, 3.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["blocks.0", "blocks.1", "blocks.2"]
    fig.savefig(tmp_path / "ratio.png")


def test_stream_panels_and_lines():
    records = recs("x_norm2") + recs("cos_x_out")
    fig = plot_stream(records, metrics=("x_norm2", "cos_x_out"), blocks=["blocks.0", "blocks.2"])
    assert [a.get_title() for a in fig.axes] == [LABELS["x_norm2"], LABELS["cos_x_out"]]  # readable, not raw keys
    assert len(fig.axes[0].lines) == 2
    np.testing.assert_allclose(fig.axes[0].lines[1].get_xdata(), [0, 10, 20])


def test_singularity_against_epoch_with_block_mean():
    records = [{**r, "epoch": r["step"] // 10} for r in recs("dead_frac")]
    fig = plot_singularity(records, metrics=("dead_frac",))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    mean = ax.lines[-1]
    np.testing.assert_allclose(mean.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(mean.get_ydata(), [2.0, 3.0, 4.0])
    assert plot_singularity(recs("dead_frac"), metrics=("dead_frac",)).axes[0].get_xlabel() == "step"


def test_missing_metric_is_named():
    with pytest.raises(LandscapeError, match="grad_ratio"):
        plot_grad_ratio(recs("x_norm2"))
