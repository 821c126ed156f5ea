"""bf16/fp16 operators: the solvers keep float32 vectors with float64 sums and cast each block to the operator's
dtype for its products.

Tolerances. bfloat16 has an 8-bit significand, unit roundoff u = 2⁻⁸ ≈ 3.9e-3 (float16: 2⁻¹¹ ≈ 4.9e-4). A
product rounds its input vector and, in a network, every activation and gradient, so the computed H̃v differs
from Hv by c·u·‖H‖ with c of order one; by Weyl's inequality every eigenvalue of the product moves by at most
that much. top_eigenpairs stops at a residual of 8u·max|θ| (its default for these dtypes: a residual much below
the products' own error cannot be certified), and |θ − λ| ≤ ‖r‖. So an eigenvalue is right to (8 + c)·u·λmax:
the tests allow 12u·λmax (measured 2.1u for the third eigenvalue of the MLP, 0.11u for λmax).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, as_operator, lanczos, slq_density, top_eigenpairs
from landscape.hessian.solvers.protocol import unit_roundoff

from . import tiny

OUTLIERS = np.array([130.0, 120.0, 110.0, 100.0, 90.0])


def _diag(dtype: torch.dtype, dim: int = 10**5):
    d = 0.01 * torch.randn(dim, generator=torch.Generator().manual_seed(0))
    d[:5] = torch.from_numpy(OUTLIERS).float()
    d = d.to(dtype)
    return as_operator(lambda V: d[:, None] * V, dim, dtype), np.sort(d.double().numpy())[::-1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_diagonal_operator(dtype):
    """Before: "could not extend the search space (dimension exhausted)" for a bf16 model. Now the top three
    within 2u (the diagonal's products round only the vector and the product), SLQ's λmax and top-2 in order."""
    op, exact = _diag(dtype)
    u = unit_roundoff(dtype)
    top = top_eigenpairs(op, k=3)
    assert top.converged and top.eigenvectors.dtype == torch.float32 and top.tol == 8 * u
    np.testing.assert_allclose(top.eigenvalues, exact[:3], rtol=2 * u)
    sd = slq_density(op, iters=40, vectors=4, top_k=2)
    assert sd.lambda_max == pytest.approx(exact[0], rel=2 * u)
    np.testing.assert_allclose(sd.top.eigenvalues, exact[:2], rtol=2 * u)  # not a copy of λ1, not 100
    res = lanczos(op, iters=30, vectors=2, keep_basis=True)
    assert res.basis.dtype == torch.float32 and res.eps_products == u
    G = res.basis[0].double() @ res.basis[0].double().T
    assert (G - torch.eye(30, dtype=torch.float64)).abs().max() < 1e-5  # float32 orthogonality, not bf16's


def _mlp_pair():
    torch.manual_seed(0)
    model = tiny.mlp(5, 10, 3).float().eval()
    X, y = tiny.data((5,), n=40)
    bf16 = tiny.mlp(5, 10, 3).eval().bfloat16()
    bf16.load_state_dict(model.state_dict())
    f32 = tiny.mlp(5, 10, 3).eval().float()
    f32.load_state_dict(bf16.state_dict())  # the same (bf16-rounded) weights, computed in float32
    return (HessianOperator(bf16, tiny.loss, (X.bfloat16(), y)),
            HessianOperator(f32, tiny.loss, (X.bfloat16().float(), y)))


def test_bf16_model_top_eigenpairs_and_slq_match_its_float32_values():
    op, ref_op = _mlp_pair()
    assert op.dtype == torch.bfloat16
    u = unit_roundoff(torch.bfloat16)
    ref = top_eigenpairs(ref_op, k=3, tol=1e-6)
    got = top_eigenpairs(op, k=3)
    assert got.converged
    lmax = ref.eigenvalues[0]
    assert abs(got.eigenvalues[0] - lmax) <= 2 * u * lmax
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, atol=12 * u * lmax)
    sd = slq_density(op, iters=30, vectors=4, top_k=1)
    assert sd.lambda_max == pytest.approx(lmax, rel=2 * u)


def test_non_finite_products_are_a_one_line_error():
    op = as_operator(lambda V: V * float("nan"), 100)
    with pytest.raises(LandscapeError, match="non-finite products"):
        top_eigenpairs(op, k=1)
