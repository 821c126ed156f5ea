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
    nodes, weights = comp.density(iter=60, n_v=3)
    assert len(nodes) == 3 and all(len(n) == 60 for n in nodes)
    est = np.mean([np.dot(n, w) for n, w in zip(nodes, weights)]) * len(eigs)
    assert abs(est - eigs.sum()) < 0.5 * np.abs(eigs).sum()
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
