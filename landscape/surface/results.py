"""A computed surface as plain data, its summary (minimum, sharpness, barriers) and its files.

`Surface`: x [n] (and y [n'] for 2-D), loss and accuracy shaped [n] or [n', n] with loss[i, j] at
(x[j], y[i]) (numpy.meshgrid order, as matplotlib and the loss-landscape HDF5 files use), `meta` (JSON-able:
direction kind, normalization, seed, explained variance, eigenvalues...), an optional trajectory [T, 2].

Sharpness (docs/methods.md §F.5): the loss rise at radius r from the origin, interpolated on the grid
(linearly in 1-D, bilinearly in 2-D): in 1-D mean(L(−r), L(r)) − L(0); in 2-D the mean and maximum over
64 points on the circle ‖c‖ = r, minus L(0). With filter-normalized directions r is a relative
distance (r = 0.1: every filter moved by 10% of its norm per unit direction), comparable across models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.io import atomic_write, dumps, write_npz

H5_KEYS = {"x": "xcoordinates", "y": "ycoordinates", "loss": "train_loss", "accuracy": "train_acc"}


@dataclass
class Surface:
    """A loss surface on a 1-D or 2-D grid: loss[i, j] and accuracy[i, j] at (x[j], y[i]), with the run's meta and an
    optional trajectory [T, dims] in grid coordinates.
    """
    x: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    y: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    trajectory: np.ndarray | None = None

    @property
    def dims(self) -> int:
        """1 for a line, 2 for a plane."""
        return 1 if self.y is None else 2

    def value_at(self, points: np.ndarray) -> np.ndarray:
        """Interpolated loss at points [k, dims] (NaN outside the grid).

        Args:
            points: [k, dims] grid coordinates.

        Returns:
            [k] losses.
        """
        pts = np.atleast_2d(np.asarray(points, float))
        if self.dims == 1:
            return np.interp(pts[:, 0], self.x, self.loss, left=np.nan, right=np.nan)
        return _bilinear(self.x, self.y, self.loss, pts[:, 0], pts[:, 1])

    def sharpness(self, radius: float) -> dict:
        """{'radius', 'loss_origin', 'rise_mean', 'rise_max'}; values None when the grid does not reach r.

        Args:
            radius: r, in grid coordinates.

        Returns:
            The loss at the origin and the mean and largest rise L(p) − L(0) over the circle |p| = r.
        """
        origin = float(self.value_at(np.zeros((1, self.dims)))[0])
        if self.dims == 1:
            ring = self.value_at(np.array([[-radius], [radius]]))
        else:
            a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            ring = self.value_at(radius * np.stack([np.cos(a), np.sin(a)], 1))
        ok = np.isfinite(origin) and np.isfinite(ring).all()
        return {"radius": radius, "loss_origin": origin if np.isfinite(origin) else None,
                "rise_mean": float(ring.mean() - origin) if ok else None,
                "rise_max": float(ring.max() - origin) if ok else None}

    def summary(self, radii: tuple[float, ...] = (0.1, 0.25)) -> dict:
        """Minimum loss and where, maximum accuracy, sharpness at each radius, and `meta`.

        Args:
            radii: the radii of `sharpness`.

        Returns:
            The summary dict.
        """
        flat = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i = np.unravel_index(int(np.argmin(flat)), self.loss.shape)
        at = [float(self.x[i[-1]])] + ([float(self.y[i[0]])] if self.dims == 2 else [])
        acc = self.accuracy[np.isfinite(self.accuracy)]
        out = {"dims": self.dims, "shape": list(self.loss.shape), "min_loss": float(flat[i]), "argmin": at,
               "max_loss": float(np.nanmax(self.loss)) if np.isfinite(self.loss).any() else None,
               "max_accuracy": float(acc.max()) if acc.size else None,
               "sharpness": [self.sharpness(r) for r in radii], **self.meta}
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of surface.npz (x, [y], loss, accuracy, [trajectory] and the meta's arrays)."""
        out = {"x": self.x, "loss": self.loss, "accuracy": self.accuracy}
        if self.y is not None:
            out["y"] = self.y
        if self.trajectory is not None:
            out["trajectory"] = np.asarray(self.trajectory, float)
        for key in ("explained_variance_ratio", "eigenvalues", "t"):
            if key in self.meta:
                out[key] = np.asarray(self.meta[key], float)
        return out

    def save_npz(self, path: str | Path) -> Path:
        """surface.npz: x, [y], loss, accuracy, [trajectory, explained_variance_ratio, eigenvalues, t], meta
        (the JSON of `meta` as a 0-d string array).

        Args:
            path: the file.

        Returns:
            The path.
        """
        return write_npz(path, **self.arrays(), meta=np.array(dumps(self.meta)))

    def save_h5(self, path: str | Path) -> Path:
        """HDF5 with the loss-landscape repository's keys (xcoordinates, ycoordinates, train_loss,
        train_acc; accuracy in percent as there), for its plotting and ParaView scripts.

        Args:
            path: the file.

        Returns:
            The path.
        """
        try:
            import h5py
        except ImportError:
            raise LandscapeError("HDF5 output needs h5py: pip install landscape-diagnostics[surface-h5]") from None
        path = Path(path)
        with atomic_write(path) as f, h5py.File(f, "w") as h:
            h[H5_KEYS["x"]] = self.x
            if self.y is not None:
                h[H5_KEYS["y"]] = self.y
            h[H5_KEYS["loss"]] = self.loss
            h[H5_KEYS["accuracy"]] = 100 * self.accuracy
        return path


def load_surface(path: str | Path) -> Surface:
    """Read a surface.npz written by `Surface.save_npz`.

    Args:
        path: the file.

    Returns:
        The `Surface`.
    """
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise LandscapeError(f"{path}: not a surface.npz ({e})") from None
    meta = json.loads(str(arr.pop("meta"))) if "meta" in arr else {}
    return Surface(arr["x"], arr["loss"], arr["accuracy"], arr.get("y"), meta, arr.get("trajectory"))


def _bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """z[i, j] at (x[j], y[i]) interpolated at (px, py); NaN outside [x0, x-1] × [y0, y-1]."""
    out = np.full(len(px), np.nan)
    inside = (px >= x[0]) & (px <= x[-1]) & (py >= y[0]) & (py <= y[-1])
    if len(x) < 2 or len(y) < 2:
        return out
    j = np.clip(np.searchsorted(x, px[inside]) - 1, 0, len(x) - 2)
    i = np.clip(np.searchsorted(y, py[inside]) - 1, 0, len(y) - 2)
    u = (px[inside] - x[j]) / (x[j + 1] - x[j])
    v = (py[inside] - y[i]) / (y[i + 1] - y[i])
    out[inside] = ((1 - u) * (1 - v) * z[i, j] + u * (1 - v) * z[i, j + 1]
                   + (1 - u) * v * z[i + 1, j] + u * v * z[i + 1, j + 1])
    return out
