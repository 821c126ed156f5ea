"""Surface figures: files written from plain arrays, shapes checked."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.plots import plot_surface_1d, plot_surface_3d, plot_surface_contour


def test_figures_are_written_from_plain_arrays(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(-2, 2, 4)
    X, Y = np.meshgrid(x, y)
    loss = 1 + X ** 2 + Y ** 2
    plot_surface_contour(x, y, loss, tmp_path / "c", trajectory=[[0.5, 1.0], [0.0, 0.0]])
    plot_surface_3d(x, y, loss, tmp_path / "s", clip=3.0)
    plot_surface_1d({"a": {"x": x, "loss": 1 + x ** 2, "accuracy": 0.5 + 0 * x}, "b": {"x": x, "loss": 2 + x}},
                    tmp_path / "l", log=True)
    for name in ("c", "s", "l"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.pdf").stat().st_size > 0


def test_wrong_shapes_are_one_line_errors():
    x = np.linspace(-1, 1, 5)
    with pytest.raises(LandscapeError, match=r"shape \[len\(y\), len\(x\)\]"):
        plot_surface_contour(x, x[:3], np.zeros((5, 5)))
    with pytest.raises(LandscapeError, match="no curves"):
        plot_surface_1d({})
