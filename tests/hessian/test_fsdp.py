"""FSDP2 under torchrun: a fully_shard'ed transformer on 2 gloo ranks equals the unsharded model in one process.

The ranks hold unequal shares of the batches (2 and 3 of 5, so one rank runs a weight-0 backward to keep the
collectives in step) and each its own rows of every parameter. Every number the sharded run gives (float32
finite-difference products) is compared with the exact float64 Hessian of the unsharded model over all the
batches: λmax to 1e-4 relative, products, gradient, the Hutchinson samples of the same Rademacher vectors, Hutch++,
SLQ, the per-step forms behind λmax's data error bar, and the curvature monitor. Run as a script
(`python tests/hessian/test_fsdp.py OUT`, with torchrun's environment) this file is the worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
else:
    from ranks import launch

transformers = pytest.importorskip("transformers")

from landscape.errors import LandscapeError  # noqa: E402
from landscape.hessian import HessianOperator, hutchinson_trace, hutchpp_trace, slq_density, top_eigenpairs  # noqa: E402
from landscape.hessian.monitor import CurvatureMonitor, MonitorOptions  # noqa: E402
from landscape.hessian.operators.fsdp import FSDPHessianOperator, is_fsdp  # noqa: E402
from landscape.objective import concat, model_task  # noqa: E402
from landscape.objective.batches import as_batch  # noqa: E402

SIZES, T, VOCAB, SPLIT = (3, 2, 4, 2, 3), 8, 23, 2


def _model() -> torch.nn.Module:
    """A 2-layer GPT-2 from a config (7,216 parameters, tied embeddings), float32, eval mode."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _batches() -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, VOCAB, (b, T), generator=g)} for b in SIZES]


def _vectors(dim: int) -> torch.Tensor:
    return torch.randn(dim, 2, generator=torch.Generator().manual_seed(2))


def _worker(out: Path) -> None:
    """One rank: shard the model, measure everything, save the results (full vectors gathered)."""
    from torch.distributed.fsdp import fully_shard

    from landscape import distributed

    distributed.setup("cpu")
    rank = distributed.rank()
    data = _batches()
    mine = data[:SPLIT] if rank == 0 else data[SPLIT:]
    model = _model()
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    op = FSDPHessianOperator(model, None, mine)
    lay = op.layout
    res = {"info": op.info(), "n": op.n_samples, "dim": op.dim}
    top = top_eigenpairs(op, 1, tol=1e-4)
    res["lambda"], res["converged"] = float(top.eigenvalues[0]), top.converged
    res["u"] = lay.gather(top.eigenvectors.T)[0]
    res["HV"] = lay.gather(op.matmat(lay.local(_vectors(lay.dim).T).T).T).T
    res["gradient"] = lay.gather(op.gradient()[None])[0]
    res["hutchinson"] = torch.from_numpy(hutchinson_trace(op, vectors=3, seed=4).samples)
    res["hutchpp"] = hutchpp_trace(op, products=6, seed=6).trace
    sd = slq_density(op, iters=6, vectors=2, seed=5, top_k=1)
    res["nodes"], res["slq_lambda"], res["slq_stderr"] = torch.from_numpy(sd.nodes), sd.lambda_max, sd.lambda_max_stderr
    res["forms_w"], res["forms"] = (torch.from_numpy(a) for a in op.batch_quadratic_forms(lay.local(res["u"][None]).T))
    monitor = CurvatureMonitor(None, mine,
                               options=MonitorOptions(k=1, tol=1e-4, metrics=("lambda_max", "grad_top_fraction")))
    res["monitor"] = {r["metric"]: r["value"] for r in monitor.measure(model, 0)}
    torch.save(res, out / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("fsdp")
    done = launch([str(Path(__file__).resolve()), str(out)], timeout=600)
    for r, p in enumerate(done):
        assert p.returncode == 0, f"rank {r}:\n{p.stderr[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def exact() -> HessianOperator:
    """The unsharded model over all 5 batches, exact float64 products."""
    return HessianOperator(_model(), None, _batches(), dtype=torch.float64)


def test_two_sharded_ranks_give_the_exact_lambda_max_products_and_gradient(ranks, exact):
    lam = float(top_eigenpairs(exact, 1, tol=1e-10).eigenvalues[0])
    for res in ranks:
        assert res["info"]["ranks"] == 2 and res["info"]["dim"] == exact.dim and res["converged"]
        assert res["n"] == exact.n_samples == sum(SIZES) * (T - 1)    # tokens, all ranks
        assert abs(res["lambda"] - lam) <= 1e-4 * lam
        assert res["info"]["finite_difference"]["error_estimate"] <= 1e-3
        HV = exact.matmat(_vectors(exact.dim).double())
        err = (res["HV"].double() - HV).norm(dim=0) / _vectors(exact.dim).double().norm(dim=0)
        assert float(err.max()) <= 1e-4 * lam       # ‖D(v) − Hv‖ ≤ 1e-4·λmax·‖v‖
        g = exact.gradient()
        torch.testing.assert_close(res["gradient"].double(), g, rtol=0, atol=1e-6 * float(g.abs().max()))
    assert ranks[0]["dim"] + ranks[1]["dim"] == exact.dim                 # each rank holds its own rows
    assert torch.equal(ranks[0]["u"], ranks[1]["u"])                      # one recurrence on both ranks


def test_solvers_draw_the_unsharded_vectors_and_run_unchanged(ranks, exact):
    ref = hutchinson_trace(exact, vectors=3, seed=4).samples            # the same Rademacher vectors
    ref_pp = hutchpp_trace(exact, products=6, seed=6).trace
    sd = slq_density(exact, iters=6, vectors=2, seed=5, top_k=1)
    lam = sd.lambda_max
    for res in ranks:
        np.testing.assert_allclose(res["hutchinson"].numpy(), ref, rtol=0, atol=1e-4 * lam * exact.dim)
        assert abs(res["hutchpp"] - ref_pp) <= 1e-4 * lam * exact.dim   # its sketch orthonormalized across ranks
        np.testing.assert_allclose(res["nodes"].numpy(), sd.nodes, rtol=0, atol=1e-3 * lam)
        assert abs(res["slq_lambda"] - lam) <= 1e-4 * lam
        assert np.isfinite(res["slq_stderr"]) and res["slq_stderr"] > 0
    assert torch.equal(ranks[0]["nodes"], ranks[1]["nodes"])


def test_the_per_step_forms_are_those_of_the_ranks_batches_joined(ranks, exact):
    """Every backward reduce-scatters over the ranks, so step j's batch is rank 0's j-th and rank 1's j-th."""
    data = [as_batch(b) for b in _batches()]
    mine = [data[:SPLIT], data[SPLIT:]]
    steps = [concat([part[j] for part in mine if j < len(part)]) for j in range(max(map(len, mine)))]
    joined = HessianOperator(_model(), None, [{"input_ids": s.kwargs["input_ids"]} for s in steps],
                             dtype=torch.float64, merge_batches=False)
    u = ranks[0]["u"].double()[:, None]
    w, q = joined.batch_quadratic_forms(u)
    for res in ranks:
        np.testing.assert_array_equal(res["forms_w"].numpy(), w)
        np.testing.assert_allclose(res["forms"].numpy(), q, rtol=0, atol=1e-4 * float(np.abs(q).max()))


def test_the_monitor_measures_the_sharded_model(ranks, exact):
    lam = float(top_eigenpairs(exact, 1, tol=1e-10).eigenvalues[0])
    mon = CurvatureMonitor(None, _batches(),
                           options=MonitorOptions(k=1, tol=1e-8, metrics=("lambda_max", "grad_top_fraction")))
    ref = {r["metric"]: r["value"] for r in mon.measure(_model().double(), 0)}
    for res in ranks:
        assert abs(res["monitor"]["lambda_max"] - lam) <= 1e-4 * lam
        assert res["monitor"]["grad_top_fraction"] == pytest.approx(ref["grad_top_fraction"], abs=1e-3)


def test_a_model_without_fsdp_is_refused_and_the_task_seen_through_the_wrapper():
    model = _model()
    assert not is_fsdp(model) and model_task(model) == "causal_lm"
    with pytest.raises(LandscapeError, match="fully_shard"):
        FSDPHessianOperator(model, None, _batches())


@pytest.mark.slow  # three processes each import torch, the models and matplotlib (like the plain 2-rank CLI test)
def test_the_hessian_cli_with_fsdp_on_two_ranks_writes_the_unsharded_spectrum(tmp_path, monkeypatch):
    """`torchrun ... -m landscape.hessian CKPT --fsdp`: the zoo's FC net sharded over 2 ranks, each with its share of
    101 samples; the spectrum equals one process's exact one, and each rank's Lanczos state file is removed."""
    import json

    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.hessian.cli.main import main
    from landscape.models import build

    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))
    data = load_data("mnist1d", n_samples=120)
    model = build("fc", kind="residual", depth=2, width=8)
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    flags = ["--n-samples", "101", "--batch-size", "30", "--iters", "10", "--vectors", "2", "--top-k", "1",
             "--device", "cpu", "--no-progress"]
    done = launch(["-m", "landscape.hessian", str(ckpt), *flags, "--fsdp", "--out", str(tmp_path / "two")],
                  timeout=600)
    assert [p.returncode for p in done] == [0, 0], done[0].stderr[-2000:] + done[1].stderr[-2000:]
    assert main([str(ckpt), *flags, "--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / d / "spectrum.json").read_text()) for d in ("one", "two"))
    assert two["fsdp"] and two["ranks"] == 2 and two["backend"] == "finite_difference"
    assert two["finite_difference"]["error_estimate"] <= 1e-3 and two["n_params"] == one["n_params"]
    assert abs(two["lambda_max"] - one["lambda_max"]) <= 1e-4 * one["lambda_max"]
    np.testing.assert_allclose(np.load(tmp_path / "two" / "spectrum.npz")["nodes"],
                               np.load(tmp_path / "one" / "spectrum.npz")["nodes"], rtol=0,
                               atol=1e-3 * one["lambda_max"])
    assert not list((tmp_path / "two").glob("lanczos_state*"))
    with pytest.raises(LandscapeError, match="torchrun"):
        main([str(ckpt), *flags, "--fsdp", "--out", str(tmp_path / "three")])


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
