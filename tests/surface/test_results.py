"""Surface summaries (sharpness by interpolation), the npz round trip and the loss-landscape HDF5 keys."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.surface import Surface, load_surface


def test_sharpness_on_closed_forms():
    x = np.linspace(-1, 1, 41)
    s1 = Surface(x, x ** 2, np.full(41, np.nan), meta={"directions": "random"})
    sh = s1.sharpness(0.25)
    assert sh["rise_mean"] == pytest.approx(0.0625) and sh["loss_origin"] == pytest.approx(0.0)
    X, Y = np.meshgrid(x, x)
    s2 = Surface(x, 1 + X + 2 * Y, np.zeros_like(X), y=x)          # bilinear interpolation is exact here
    sh = s2.sharpness(0.5)
    assert sh["rise_mean"] == pytest.approx(0.0, abs=1e-12)
    assert sh["rise_max"] == pytest.approx(0.5 * np.sqrt(5), rel=1e-3)  # max of r(cos a + 2 sin a) on 64 angles
    assert s2.sharpness(2.0)["rise_mean"] is None                   # beyond the grid
    summary = s2.summary()
    assert summary["min_loss"] == pytest.approx(-2.0) and summary["argmin"] == [-1.0, -1.0]
    assert summary["shape"] == [41, 41]


def test_npz_round_trip_and_h5_keys(tmp_path):
    x, y = np.linspace(-1, 1, 3), np.linspace(-2, 2, 4)
    loss = np.arange(12.0).reshape(4, 3)
    s = Surface(x, loss, loss / 100, y=y, meta={"directions": "pca", "explained_variance_ratio": [0.7, 0.2],
                                                 "bad": float("nan")}, trajectory=np.zeros((5, 2)))
    s.save_npz(tmp_path / "surface.npz")
    back = load_surface(tmp_path / "surface.npz")
    np.testing.assert_array_equal(back.loss, loss)
    np.testing.assert_array_equal(back.y, y)
    assert back.meta["directions"] == "pca" and back.meta["bad"] is None
    with np.load(tmp_path / "surface.npz") as z:
        np.testing.assert_allclose(z["explained_variance_ratio"], [0.7, 0.2])
        assert z["trajectory"].shape == (5, 2)
    h5py = pytest.importorskip("h5py")
    s.save_h5(tmp_path / "surface.h5")
    with h5py.File(tmp_path / "surface.h5", "r") as h:
        assert set(h) == {"xcoordinates", "ycoordinates", "train_loss", "train_acc"}
        np.testing.assert_array_equal(h["train_loss"][:], loss)
        np.testing.assert_allclose(h["train_acc"][:], loss)  # percent
