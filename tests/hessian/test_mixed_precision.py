"""Mixed precision: products under bf16 autocast, the accuracy a dtype allows, and the hessian CLI's note when
--tol asks for more (the measured study of what bf16 does is experiments/bf16_study.py, docs/methods.md §E.9)."""

from __future__ import annotations

import pytest
import torch

from landscape.hessian import HessianOperator, top_eigenpairs
from landscape.hessian.cli.precision import attainable

from .test_fsdp import _batches, _model


def test_autocast_products_are_bf16_computations_of_the_float32_weights():
    exact = HessianOperator(_model(), None, _batches(), dtype=torch.float64)
    lam = float(top_eigenpairs(exact, 1, tol=1e-10).eigenvalues[0])
    op = HessianOperator(_model(), None, _batches(), autocast=torch.bfloat16)
    assert op.dtype == torch.float32 and op.info()["autocast"] == "bfloat16"
    V = torch.randn(op.dim, 2, generator=torch.Generator().manual_seed(0))
    HV, ref = op.matmat(V), exact.matmat(V.double())
    assert HV.dtype == torch.float32
    err = float((HV.double() - ref).norm() / ref.norm())
    assert 1e-5 < err < 5e-2                       # bf16 arithmetic, not float32's (which is ~1e-6 here)
    got = float(top_eigenpairs(op, 1, tol=3e-2).eigenvalues[0])
    assert abs(got - lam) <= 2e-2 * lam


def test_the_attainable_accuracy_is_eight_units_of_roundoff_or_the_finite_difference_estimate():
    assert attainable(torch.bfloat16) == pytest.approx(8 * 2.0**-8)
    assert attainable(torch.float16) == pytest.approx(8 * 2.0**-11)
    assert attainable(torch.float32) == pytest.approx(8 * 2.0**-24)
    assert attainable(torch.float32, fd_error=1e-4) == 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, module_cache):
    """A one-block FC net of the zoo on 60 MNIST-1D samples, as landscape.train would save it."""
    from landscape.checkpoint import save_checkpoint
    from landscape.data import load_data
    from landscape.models import build

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_CACHE", module_cache)
        data = load_data("mnist1d", n_samples=60)
    model = build("fc", kind="residual", depth=1, width=6)
    path = tmp_path_factory.mktemp("precision") / "ckpt.pt"
    save_checkpoint(path, model, meta={"model": model.build_spec, "data": data.spec, "epoch": 0})
    return path


@pytest.mark.parametrize("flags, noted", [(["--dtype", "bfloat16", "--tol", "1e-4"], True),
                                          (["--dtype", "bfloat16", "--tol", "0.1"], False),
                                          (["--autocast", "bfloat16", "--tol", "1e-4"], True),
                                          (["--tol", "1e-4"], False)])
def test_the_cli_notes_a_tolerance_the_dtype_cannot_reach(checkpoint, shared_cache, tmp_path, capsys, flags,
                                                           noted):
    from landscape.hessian.cli.main import main

    code = main([str(checkpoint), "--n-samples", "40", "--iters", "6", "--vectors", "1", "--top-k", "1",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 0
    assert ("asks for more than bfloat16 products (8 units of roundoff) allows" in err) is noted
