"""The PyHessian drop-in: PyHessian's README example, its return formats, and exact values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from landscape.compat.pyhessian import hessian
from landscape.errors import LandscapeError
from landscape.hessian import exact_hessian


def _setup(bn: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 10), nn.Tanh()] + ([nn.BatchNorm1d(10)] if bn else []) + [nn.Linear(10, 10), nn.Softplus()]
    model = nn.Sequential(*layers, nn.Linear(10, 3))  # float32, as PyHessian users have it
    inputs = torch.randn(40, 5)
    targets = torch.randint(0, 3, (40,))
    if bn:
        with torch.no_grad():
            model(inputs)  # non-trivial running statistics
    H = exact_hessian(model.eval(), nn.CrossEntropyLoss(), (inputs, targets))
    return model.train(), inputs, targets, torch.linalg.eigvalsh(H).numpy(), H


def test_readme_example_formats_and_values():
    model, inputs, targets, eigs, H = _setup()
    criterion = torch.nn.CrossEntropyLoss()
    with pytest.warns(UserWarning, match="cuda=True but the model is on cpu"):
        hessian_comp = hessian(model, criterion, data=(inputs, targets), cuda=True)
    top_eigenvalues, top_eigenvector = hessian_comp.eigenvalues()
    trace = hessian_comp.trace()
    density_eigen, density_weight = hessian_comp.density()

    assert isinstance(top_eigenvalues, list) and len(top_eigenvalues) == 1 and isinstance(top_eigenvalues[0], float)
    assert top_eigenvalues[0] == pytest.approx(eigs[np.argmax(np.abs(eigs))], rel=1e-5)
    assert len(top_eigenvector) == 1
    vec = top_eigenvector[0]
    assert [v.shape for v in vec] == [p.shape for p in model.parameters()]
    assert all(v.dtype == torch.float32 for v in vec)
    assert math.isclose(sum(float((v * v).sum()) for v in vec), 1.0, rel_tol=1e-5)

    assert isinstance(trace, list) and 1 <= len(trace) <= 100 and all(isinstance(t, float) for t in trace)

    assert len(density_eigen) == 1 and len(density_weight) == 1
    assert len(density_eigen[0]) == 100 and len(density_weight[0]) == 100
    assert sum(density_weight[0]) == pytest.approx(1.0, rel=1e-5)
    assert max(density_eigen[0]) == pytest.approx(eigs.max(), rel=1e-5)
    assert min(density_eigen[0]) == pytest.approx(eigs.min(), abs=1e-4 * eigs.max())
    assert model.training and all(p.grad is None for p in model.parameters())


def test_values_against_the_exact_hessian():
    model, inputs, targets, eigs, H = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
    values, vectors = comp.eigenvalues(top_n=3)
    np.testing.assert_allclose(values, eigs[np.argsort(-np.abs(eigs))[:3]], rtol=1e-5)
    samples = comp.trace(maxIter=200, tol=0.0)
    assert len(samples) == 200
    assert abs(np.mean(samples) - eigs.sum()) < 3 * np.std(samples, ddof=1) / math.sqrt(200)
    # SLQ: each vector's quadrature reproduces its moments zᵀHᵖz/‖z‖² of the exact Hessian (Gauss
    # quadrature with m nodes is exact to degree 2m − 1); z is PyHessian's draw from the global RNG
    torch.manual_seed(11)
    Z = torch.randint(0, 2, (H.shape[0], 3), dtype=torch.float64).mul_(2).sub_(1)
    torch.manual_seed(11)
    nodes, weights = comp.density(iter=60, n_v=3)
    assert len(nodes) == 3 and all(len(n) == 60 for n in nodes)
    nodes, weights = np.array(nodes), np.array(weights)
    HZ = H @ Z
    for p, ref in ((1, (Z * HZ).sum(0)), (2, (HZ * HZ).sum(0)), (3, (HZ * (H @ HZ)).sum(0))):
        np.testing.assert_allclose((weights * nodes**p).sum(1), ref.numpy() / H.shape[0], rtol=2e-5)
    est = float((weights * nodes).sum(1).mean()) * H.shape[0]
    assert est == pytest.approx(float((Z * HZ).sum(0).mean()), rel=2e-5)  # the Hutchinson estimate of tr H
    v = [torch.randn_like(p) for p in comp.params]
    vhv, hv = comp.dataloader_hv_product(v)
    flat = torch.cat([t.reshape(-1) for t in v]).double()
    ref = H @ flat
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hv]).double(), ref, rtol=1e-4, atol=1e-5)
    assert vhv == pytest.approx(float(flat @ ref), rel=1e-4)


def test_dataloader_mode_equals_single_batch_and_train_mode_bn_is_evaluated_in_eval():
    model, inputs, targets, eigs, _ = _setup(bn=True)
    loader = [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, 40, 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
        full = hessian(model, nn.CrossEntropyLoss(), dataloader=loader, cuda=False)
    assert full.full_dataset and not one.full_dataset
    a, _ = one.eigenvalues(top_n=2)
    b, _ = full.eigenvalues(top_n=2)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a, eigs[np.argsort(-np.abs(eigs))[:2]], rtol=1e-5)
    assert model.training and model[2].training  # flags restored, unlike PyHessian


def test_density_clamps_iter_to_a_small_model_and_gives_its_exact_spectrum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))  # 26 parameters < iter=100
    inputs, targets = torch.randn(10, 3), torch.randint(0, 2, (10,))
    eigs = torch.linalg.eigvalsh(exact_hessian(model, nn.CrossEntropyLoss(), (inputs, targets))).numpy()
    comp = hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
    nodes, weights = comp.density()
    assert len(nodes[0]) == 26 and sum(weights[0]) == pytest.approx(1.0, rel=1e-5)
    big = np.array(nodes[0])[np.array(weights[0]) > 1e-6]  # nodes that carry weight are eigenvalues
    assert np.abs(big[:, None] - eigs[None, :]).min(1).max() < 1e-4 * np.abs(eigs).max()


def test_eigenvalues_warn_when_not_converged():
    model, inputs, targets, eigs, _ = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
    with pytest.warns(UserWarning, match="not converged within maxIter=1"):
        comp.eigenvalues(maxIter=1, top_n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comp.eigenvalues(top_n=1)


def test_bad_arguments():
    model, inputs, targets, _, _ = _setup()
    with pytest.raises(LandscapeError, match="exactly one"):
        hessian(model, nn.CrossEntropyLoss(), cuda=False)
    with pytest.raises(LandscapeError, match="exactly one"):
        hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), dataloader=[(inputs, targets)], cuda=False)


def test_agrees_with_pyhessian_when_installed():
    pyhessian = pytest.importorskip("pyhessian")
    model, inputs, targets, eigs, _ = _setup()
    model.eval()
    torch.manual_seed(3)
    theirs, _ = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False).eigenvalues(
        maxIter=500, tol=1e-6
    )
    for p in model.parameters():
        p.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, _ = hessian(model, nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False).eigenvalues()
    assert ours[0] == pytest.approx(theirs[0], rel=1e-3)
