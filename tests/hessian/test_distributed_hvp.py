"""The curvature operators under torch.distributed: 2 gloo ranks on CPU equal one process.

Each rank holds an unequal share of the samples (37 and 63 of 100); the distributed products, the
global sample count and the SLQ nodes must equal the single-process ones. Run as a script
(`python tests/hessian/test_distributed_hvp.py OUT`, with torchrun's environment) this file is the
worker of those tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
else:
    from ranks import launch

from landscape.hessian import GGNOperator, HessianOperator, slq_density  # noqa: E402
from landscape.hessian.solvers.errorbars import rayleigh_stderr  # noqa: E402

N, SPLIT, K, ITERS, PROBES = 100, 37, 3, 20, 3


def _problem():
    """A float64 MLP (a few dozen parameters), 100 samples, K probe columns: the same on every process."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    X = torch.randn(N, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (N,))
    return model, X, y


def _batches(X, y, size: int = 16):
    return list(zip(X.split(size), y.split(size)))


def _unit(dim: int) -> torch.Tensor:
    v = torch.randn(dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return v / v.norm()


def _worker(out: Path) -> None:
    """One rank: its share of the samples, products of both operators, an SLQ run; saved per rank."""
    from landscape import distributed

    distributed.setup("cpu")
    model, X, y = _problem()
    part = slice(0, SPLIT) if distributed.rank() == 0 else slice(SPLIT, N)
    batches = _batches(X[part], y[part])
    result = {}
    for name, cls in (("hessian", HessianOperator), ("ggn", GGNOperator)):
        op = cls(model, F.cross_entropy, batches)
        V = torch.randn(op.dim, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        result[name] = op.matmat(V)
        result[f"{name}_n"] = torch.tensor(op.n_samples)
        result[f"{name}_distributed"] = torch.tensor(op.distributed)
    sd = slq_density(HessianOperator(model, F.cross_entropy, batches), iters=ITERS, vectors=PROBES, seed=3)
    result["nodes"], result["weights"] = torch.from_numpy(sd.nodes), torch.from_numpy(sd.weights)
    op = HessianOperator(model, F.cross_entropy, batches)
    e = rayleigh_stderr(op, _unit(op.dim))
    result["stderr"] = torch.tensor([e["value"], e["stderr"], e["batches"]], dtype=torch.float64)
    result["forms_w"], result["forms"] = (torch.from_numpy(a) for a in op.batch_quadratic_forms(_unit(op.dim)))
    torch.save(result, out / f"rank{distributed.rank()}.pt")
    distributed.shutdown()


def _launch(args: list[str]) -> list[subprocess.CompletedProcess]:
    """2 ranks of `python args...`; every one must succeed."""
    done = launch(args)
    for r, p in enumerate(done):
        assert p.returncode == 0, f"rank {r}:\n{p.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The worker's results on both ranks (one launch for the tests below)."""
    out = tmp_path_factory.mktemp("ranks")
    _launch([str(Path(__file__).resolve()), str(out)])
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_with_unequal_shares_equal_one_process(ranks):
    model, X, y = _problem()
    for name, cls in (("hessian", HessianOperator), ("ggn", GGNOperator)):
        op = cls(model, F.cross_entropy, _batches(X, y))
        assert not op.distributed
        V = torch.randn(op.dim, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref = op.matmat(V)
        for r, res in enumerate(ranks):
            assert bool(res[f"{name}_distributed"]) and int(res[f"{name}_n"]) == N
            torch.testing.assert_close(res[name], ref, rtol=0, atol=1e-10 * float(ref.abs().max()),
                                       msg=f"{name} rank {r}")
    sd = slq_density(HessianOperator(model, F.cross_entropy, _batches(X, y)), iters=ITERS, vectors=PROBES, seed=3)
    for res in ranks:
        np.testing.assert_allclose(res["nodes"].numpy(), sd.nodes, rtol=0, atol=1e-6)
        np.testing.assert_allclose(res["weights"].numpy(), sd.weights, rtol=0, atol=1e-6)
    assert torch.equal(ranks[0]["nodes"], ranks[1]["nodes"])  # the ranks ran one recurrence


def test_lambda_max_data_stderr_comes_from_every_ranks_batches(ranks):
    """Two ranks' per-batch forms are gathered: the error bar equals one process holding all the batches
    (7 batches: 3 of rank 0's 37 samples, 4 of rank 1's 63), not either rank's own."""
    model, X, y = _problem()
    one = HessianOperator(model, F.cross_entropy, _batches(X[:SPLIT], y[:SPLIT]) + _batches(X[SPLIT:], y[SPLIT:]))
    ref = rayleigh_stderr(one, _unit(one.dim))
    w, q = one.batch_quadratic_forms(_unit(one.dim))
    assert len(w) == 7 and ref["batches"] == 14            # fewer than 8 batches: each cut in 2
    own = rayleigh_stderr(HessianOperator(model, F.cross_entropy, _batches(X[:SPLIT], y[:SPLIT])), _unit(one.dim))
    assert own["stderr"] != pytest.approx(ref["stderr"], rel=1e-3)      # a rank's own batches would differ
    for res in ranks:
        np.testing.assert_array_equal(res["forms_w"].numpy(), w)
        np.testing.assert_allclose(res["forms"].numpy(), q, rtol=1e-10)
        value, stderr, batches = res["stderr"].tolist()
        assert batches == 14
        assert value == pytest.approx(ref["value"], rel=1e-10) and stderr == pytest.approx(ref["stderr"], rel=1e-10)


def test_distributed_without_a_process_group_is_refused():
    from landscape.errors import LandscapeError

    model, X, y = _problem()
    with pytest.raises(LandscapeError, match="torch.distributed is not initialized"):
        HessianOperator(model, F.cross_entropy, (X, y), distributed=True)


@pytest.mark.slow  # three processes each import torch, the models and matplotlib: 10-35 s on 2 cores
def test_cli_under_two_ranks_writes_the_single_process_spectrum(tmp_path, monkeypatch):
    """`python -m landscape.hessian` on 2 ranks: rank 0 writes the outputs, equal to a 1-process run."""
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.hessian.cli.main import main
    from landscape.models import build

    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    data = load_data("mnist1d", n_samples=120)
    model = build("fc", kind="plain", depth=1, width=6)
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    flags = ["--n-samples", "101", "--batch-size", "30", "--iters", "12", "--vectors", "2", "--top-k", "0",
             "--device", "cpu", "--no-progress"]
    ranks = _launch(["-m", "landscape.hessian", str(ckpt), *flags, "--out", str(tmp_path / "two")])
    assert ranks[0].stdout.strip() and not ranks[1].stdout.strip()
    assert main([str(ckpt), *flags, "--out", str(tmp_path / "one")]) == 0
    one, two = (np.load(tmp_path / d / "spectrum.npz") for d in ("one", "two"))
    np.testing.assert_allclose(two["nodes"], one["nodes"], rtol=0, atol=1e-5 * np.abs(one["nodes"]).max())
    summary = json.loads((tmp_path / "two" / "spectrum.json").read_text())
    assert summary["n_samples"] == 101 and summary["ranks"] == 2


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
