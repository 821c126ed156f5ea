"""Data parallel engines on 2 gloo ranks: each rank passes its own share of the samples (37 and 63 of 100, in
batches of different counts), and the loss grid and the curvature monitor equal one process holding them all.
Run as a script (`python tests/test_data_parallel.py OUT`, with torchrun's environment) this file is the
worker."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
else:
    from ranks import launch

from landscape.errors import LandscapeError  # noqa: E402
from landscape.hessian.monitor import CurvatureMonitor, MonitorOptions  # noqa: E402
from landscape.surface.grid import evaluate_grid, mesh_coords  # noqa: E402

N, SPLIT = 100, 37
METRICS = ("lambda_max", "top_eigenvalues", "grad_top_fraction", "eos_ratio", "trace", "negative_ratio")


def _problem():
    """A float64 MLP, 100 samples, two fixed directions: the same on every process."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    X, y = torch.randn(N, 5, dtype=torch.float64), torch.randint(0, 3, (N,))
    dirs = [{n: torch.randn_like(p) for n, p in model.named_parameters()} for _ in range(2)]
    return model, X, y, dirs


def _batches(X, y, size: int = 16):
    return list(zip(X.split(size), y.split(size)))


def _measure(model, dirs, data, split="points"):
    """The grid (3 × 4 points) and one monitor measurement (SGD with momentum, for eos_ratio)."""
    grid = evaluate_grid(model, F.cross_entropy, data, dirs, mesh_coords(np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)),
                         split=split)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = CurvatureMonitor(F.cross_entropy, data, optimizer=opt,
                           options=MonitorOptions(k=2, metrics=METRICS, tol=1e-9, seed=3))
    records = mon.measure(model, 0)
    values = torch.tensor([r["value"] for r in records], dtype=torch.float64)
    return {"loss": torch.from_numpy(grid.loss), "accuracy": torch.from_numpy(grid.accuracy), "monitor": values}


def _worker(out: Path) -> None:
    from landscape import distributed

    distributed.setup("cpu")
    model, X, y, dirs = _problem()
    part = slice(0, SPLIT) if distributed.rank() == 0 else slice(SPLIT, N)
    torch.save(_measure(model, dirs, _batches(X[part], y[part]), split="data"), out / f"rank{distributed.rank()}.pt")
    distributed.shutdown()


def test_two_ranks_with_their_own_samples_equal_one_process(tmp_path):
    done = launch([str(Path(__file__).resolve()), str(tmp_path)])
    for r, p in enumerate(done):
        assert p.returncode == 0, f"rank {r}:\n{p.stderr[-3000:]}"
    model, X, y, dirs = _problem()
    ref = _measure(model, dirs, _batches(X, y))
    own = _measure(model, dirs, _batches(X[:SPLIT], y[:SPLIT]))
    assert not np.allclose(own["loss"], ref["loss"])                  # one rank's share alone differs
    for r in range(2):
        res = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(res["loss"], ref["loss"], rtol=1e-12, atol=0)
        torch.testing.assert_close(res["accuracy"], ref["accuracy"], rtol=1e-12, atol=0)
        torch.testing.assert_close(res["monitor"], ref["monitor"], rtol=1e-7, atol=1e-10, equal_nan=True)


def test_recomputed_batchnorm_statistics_need_every_sample_on_every_rank():
    model, X, y, dirs = _problem()
    with pytest.raises(LandscapeError, match="split='points'"):
        evaluate_grid(model, F.cross_entropy, (X, y), dirs, [[0.0, 0.0]], bn="recompute", split="data")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
