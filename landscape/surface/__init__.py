"""Loss surfaces of any nn.Module + loss + data: directions, many grid points per data pass, paths.

    dirs = random_directions(model, 2, seed=0)                  # filter-normalized (Li et al. 2018)
    vals = evaluate_grid(model, F.cross_entropy, (X, y), dirs, mesh_coords(xs, xs))
    surf = Surface(xs, vals.loss.reshape(n, n), vals.accuracy.reshape(n, n), y=xs)
    path = linear_path(model, F.cross_entropy, (X, y), weights_a, weights_b)   # .barrier

Directions: random_directions, eigen_directions (top_eigenpairs eigenvectors), pca_directions,
difference. The CLI is `python -m landscape.surface` (docs/cli.md).
"""

from landscape.surface.directions import (
    PCADirections,
    as_direction,
    difference,
    eigen_directions,
    normalize_direction,
    parameters_of,
    pca_directions,
    random_directions,
)
from landscape.surface.grid import GridValues, evaluate_grid, mesh_coords, pick_backend
from landscape.surface.paths import (
    PathValues,
    barrier_height,
    bezier_path,
    bezier_point,
    linear_path,
    train_bezier,
)
from landscape.surface.results import Surface, load_surface

__all__ = [
    "GridValues",
    "PCADirections",
    "PathValues",
    "Surface",
    "as_direction",
    "barrier_height",
    "bezier_path",
    "bezier_point",
    "difference",
    "eigen_directions",
    "evaluate_grid",
    "linear_path",
    "load_surface",
    "mesh_coords",
    "normalize_direction",
    "parameters_of",
    "pca_directions",
    "pick_backend",
    "random_directions",
    "train_bezier",
]
