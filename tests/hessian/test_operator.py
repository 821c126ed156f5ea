"""HessianOperator against exact float64 Hessians: every model, both backends, every data form."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian
from landscape.hessian.operators.backends import DoubleBackwardHessian as _DoubleBackwardHessian
from landscape.hessian.operators.backends import FuncHessian as _FuncHessian

from . import tiny

MODELS = tiny.models()


def _landscape_models() -> dict:
    from landscape.models import build

    return {
        "fc_residual": (build("fc", kind="residual", depth=3, width=5, in_dim=5, n_classes=3).double().eval(), (5,)),
        "fc_ortho": (
            build("fc", kind="plain", connect="ortho_feature", depth=3, width=5, in_dim=5, n_classes=3).double().eval(),
            (5,),
        ),
        "vit_tiny": (
            build("vit", preset="tiny", img_size=4, patch=2, in_channels=1, dim=4, depth=1, heads=2, n_classes=3)
            .double()
            .eval(),
            (1, 4, 4),
        ),
        "resnetv2": (build("resnetv2", depth=8, width=2, in_channels=1, n_classes=3).double().eval(), (1, 4, 4)),
    }


@pytest.mark.parametrize("backend", ["func", "double_backward"])
@pytest.mark.parametrize("name", list(MODELS))
def test_hvp_equals_exact(name, backend):
    model, shape = MODELS[name]
    X, y = tiny.data(shape)
    H = exact_hessian(model, tiny.loss, (X, y))
    op = HessianOperator(model, tiny.loss, (X, y), backend=backend)
    V = torch.randn(op.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["fc_residual", "fc_ortho", "vit_tiny", "resnetv2"])
def test_hvp_equals_exact_landscape_models(name):
    model, shape = _landscape_models()[name]
    X, y = tiny.data(shape, n=6)
    H = exact_hessian(model, tiny.loss, (X, y))
    V = torch.randn(H.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for backend in ("func", "double_backward"):
        op = HessianOperator(model, tiny.loss, (X, y), backend=backend)
        torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("merge", [False, None])
def test_unequal_batches_equal_full_batch_average(merge):
    model, shape = MODELS["convbn"]
    X, y = tiny.data(shape, n=17)
    batches = [(X[:3], y[:3]), (X[3:11], y[3:11]), (X[11:], y[11:])]
    full = HessianOperator(model, tiny.loss, (X, y))
    split = HessianOperator(model, tiny.loss, batches, merge_batches=merge)
    assert (split.info()["merge_samples"] is None) == (merge is False)
    V = torch.randn(full.dim, 2, dtype=torch.float64)
    torch.testing.assert_close(split.matmat(V), full.matmat(V), rtol=1e-10, atol=1e-12)
    assert split.n_samples == 17


def test_dataloader_and_iterator_inputs():
    model, shape = MODELS["mlp"]
    X, y = tiny.data(shape, n=10)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    ref = HessianOperator(model, tiny.loss, (X, y)).matmat(V)
    loader = DataLoader(TensorDataset(X, y), batch_size=4)
    torch.testing.assert_close(HessianOperator(model, tiny.loss, loader).matmat(V), ref)
    torch.testing.assert_close(HessianOperator(model, tiny.loss, SimpleNamespace(X=X, y=y)).matmat(V), ref)
    gen = ((X[i : i + 3], y[i : i + 3]) for i in range(0, 10, 3))
    op = HessianOperator(model, tiny.loss, gen)
    torch.testing.assert_close(op.matmat(V), ref)
    torch.testing.assert_close(op.matmat(V), ref)  # the one-shot iterator was kept


def test_backends_agree_and_matmat_is_stacked_matvec():
    model, shape = MODELS["attention"]
    X, y = tiny.data(shape)
    ops = [HessianOperator(model, tiny.loss, (X, y), backend=b) for b in ("func", "double_backward")]
    V = torch.randn(ops[0].dim, 4, dtype=torch.float64)
    torch.testing.assert_close(ops[0].matmat(V), ops[1].matmat(V), rtol=1e-10, atol=1e-12)
    for op in ops:
        stacked = torch.stack([op.matvec(V[:, i]) for i in range(4)], 1)
        torch.testing.assert_close(op.matmat(V), stacked, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(op @ V[:, 0], stacked[:, 0])


def test_cached_graphs_and_recomputation_agree():
    model, shape = MODELS["orthogonal"]
    X, y = tiny.data(shape, n=9)
    batches = [(X[:4], y[:4]), (X[4:], y[4:])]
    kept = HessianOperator(model, tiny.loss, batches, backend="double_backward", merge_batches=False)
    fresh = HessianOperator(model, tiny.loss, batches, backend="double_backward", merge_batches=False, cache=False)
    V = torch.randn(kept.dim, 2, dtype=torch.float64)
    first = kept.matmat(V)
    assert kept.info()["cached"] and not fresh.info()["cached"]
    torch.testing.assert_close(kept.matmat(V), first, rtol=0, atol=0)
    torch.testing.assert_close(fresh.matmat(V), first, rtol=0, atol=0)


def test_model_left_untouched():
    model, shape = MODELS["convbn"]
    model.bn.train(False)
    X, y = tiny.data(shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    for backend in ("func", "double_backward"):
        op = HessianOperator(model, tiny.loss, (X, y), backend=backend)
        op.matmat(torch.randn(op.dim, 2, dtype=torch.float64))
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_snapshot_is_the_hessian_at_construction():
    model = tiny.mlp()
    X, y = tiny.data((5,))
    op = HessianOperator(model, tiny.loss, (X, y))
    H = exact_hessian(model, tiny.loss, (X, y))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    V = torch.randn(op.dim, 1, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "layer", [nn.BatchNorm1d(7, dtype=torch.float64), nn.Dropout(0.1)], ids=["batchnorm", "dropout"]
)
def test_train_mode_batchnorm_or_dropout_refused(layer):
    model = nn.Sequential(nn.Linear(5, 7), layer, nn.Tanh(), nn.Linear(7, 3)).double().train()
    X, y = tiny.data((5,))
    with pytest.raises(LandscapeError, match="call model.eval"):
        HessianOperator(model, tiny.loss, (X, y))
    HessianOperator(model.eval(), tiny.loss, (X, y))


def test_hidden_randomness_caught_by_determinism_check():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x):
            return self.lin(F.dropout(x, 0.5, training=True))

    X, y = tiny.data((5,))
    with pytest.raises(LandscapeError, match="not be a fixed matrix"):
        HessianOperator(Noisy().double(), tiny.loss, (X, y))


def test_parameter_subset_is_the_submatrix():
    model, shape = MODELS["residual"]
    X, y = tiny.data(shape)
    H = exact_hessian(model, tiny.loss, (X, y))
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    offsets = np.cumsum([0] + sizes)
    chosen = [names[4], names[1]]  # any order in, model order out
    idx = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in sorted(names.index(c) for c in chosen)])
    params = dict(model.named_parameters())
    for sel in (chosen, [params[c] for c in chosen]):
        op = HessianOperator(model, tiny.loss, (X, y), params=sel)
        assert op.param_names == [names[1], names[4]]
        V = torch.randn(op.dim, 2, dtype=torch.float64)
        torch.testing.assert_close(op.matmat(V), H[idx][:, idx] @ V, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(exact_hessian(model, tiny.loss, (X, y), params=sel), H[idx][:, idx])


def test_float64_on_a_float32_model_and_scipy_bridge():
    from scipy.sparse.linalg import eigsh

    model = tiny.mlp().float().eval()
    X, y = tiny.data((5,))
    H = exact_hessian(model, tiny.loss, (X.float(), y))
    op = HessianOperator(model, tiny.loss, (X.float(), y), dtype=torch.float64)
    assert op.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    V = torch.randn(op.dim, 2, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-8)
    lin = op.to_scipy()
    v = np.random.default_rng(0).standard_normal(op.dim)
    np.testing.assert_allclose(lin @ v, (H @ torch.from_numpy(v)).numpy(), rtol=1e-8, atol=1e-10)
    top = eigsh(lin, k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), torch.linalg.eigvalsh(H)[-2:].numpy(), rtol=1e-7)


def test_auto_falls_back_when_forward_ad_is_missing():
    model = tiny.NoForwardAD(5, 4).double()
    X, y = tiny.data((5,))
    with pytest.raises(LandscapeError, match="backend 'func' cannot"):
        HessianOperator(model, tiny.loss, (X, y), backend="func")
    op = HessianOperator(model, tiny.loss, (X, y))
    assert op.backend == "double_backward"
    V = torch.randn(op.dim, 2, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), exact_hessian(model, tiny.loss, (X, y)) @ V, rtol=1e-8, atol=1e-8)

    class NoDoubleBackward(_DoubleBackwardHessian):
        def prepare(self, batch):
            raise RuntimeError("double backward unsupported")

    class Op(HessianOperator):
        _backends = {"func": _FuncHessian, "double_backward": NoDoubleBackward}

    model, shape = MODELS["mlp"]
    X, y = tiny.data(shape)
    assert Op(model, tiny.loss, (X, y)).backend == "func"
    with pytest.raises(LandscapeError, match="no backend can differentiate"):

        class Neither(HessianOperator):
            _backends = {"func": NoDoubleBackward, "double_backward": NoDoubleBackward}

        Neither(model, tiny.loss, (X, y))


def test_mse_loss_uses_a_working_backend():
    model = tiny.mlp()
    X, _ = tiny.data((5,))
    Y = torch.randn(12, 3, dtype=torch.float64)
    H = exact_hessian(model, F.mse_loss, (X, Y))
    op = HessianOperator(model, F.mse_loss, (X, Y))
    V = torch.randn(op.dim, 2, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-8, atol=1e-8)


def test_small_memory_budget_chunks_vectors_and_skips_merging():
    model, shape = MODELS["mlp"]
    X, y = tiny.data(shape, n=16)
    batches = [(X[:8], y[:8]), (X[8:], y[8:])]
    ref = HessianOperator(model, tiny.loss, (X, y))
    op = HessianOperator(model, tiny.loss, batches, backend="func", max_memory=1)
    assert op.plan.sizing.lanes(8) == 1 and op.info()["merge_samples"] is None
    V = torch.randn(op.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), ref.matmat(V), rtol=1e-10, atol=1e-12)
    assert not op.info()["cached"]


def test_bad_inputs():
    model, shape = MODELS["mlp"]
    X, y = tiny.data(shape)
    with pytest.raises(LandscapeError, match="backend must be"):
        HessianOperator(model, tiny.loss, (X, y), backend="jax")
    with pytest.raises(LandscapeError, match="scalar"):
        HessianOperator(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), (X, y))
    with pytest.raises(LandscapeError, match="matches no parameter"):
        HessianOperator(model, tiny.loss, (X, y), params=["nope"])
    with pytest.raises(LandscapeError, match="no batches"):
        HessianOperator(model, tiny.loss, [])
    op = HessianOperator(model, tiny.loss, (X, y))
    with pytest.raises(LandscapeError, match="expected a"):
        op.matmat(torch.zeros(op.dim + 1, 2))


def test_products_use_the_flags_at_construction():
    model, shape = MODELS["convbn"]
    X, y = tiny.data(shape)
    for backend in ("func", "double_backward"):
        op = HessianOperator(model, tiny.loss, (X, y), backend=backend, cache=False)
        V = torch.randn(op.dim, 2, dtype=torch.float64)
        ref = op.matmat(V)
        model.train()  # e.g. the caller resumes training between products
        try:
            torch.testing.assert_close(op.matmat(V), ref, rtol=0, atol=0)
            assert model.training and model.bn.training
        finally:
            model.eval()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_operator_matches_cpu_with_data_left_on_the_cpu():
    from landscape.hessian import slq_density, top_eigenpairs

    model, shape = MODELS["convbn"]
    X, y = tiny.data(shape, n=20)
    batches = [(X[:8], y[:8]), (X[8:], y[8:])]  # data stays on the CPU; the operator moves it
    H = exact_hessian(model, tiny.loss, batches)
    gpu = HessianOperator(model.cuda(), tiny.loss, batches)
    try:
        V = torch.randn(gpu.dim, 3, dtype=torch.float64)
        torch.testing.assert_close(gpu.matmat(V).cpu(), H @ V, rtol=1e-8, atol=1e-8)
        eigs = torch.linalg.eigvalsh(H)
        assert top_eigenpairs(gpu, k=1).eigenvalues[0] == pytest.approx(float(eigs[-1]), rel=1e-6)
        sd = slq_density(gpu, iters=30, vectors=3)
        assert sd.lambda_max == pytest.approx(float(eigs[-1]), rel=1e-6)
    finally:
        model.cpu()
