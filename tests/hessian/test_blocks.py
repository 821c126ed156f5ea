"""Per-block spectra: the restricted operator against principal submatrices of exact Hessians and dense
matrices, the batched driver against one Lanczos run per block, and the default grouping of real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, exact_hessian, lanczos
from landscape.hessian.blocks import RestrictedOperator, block_segments, block_spectra, param_blocks

from . import tiny

D = torch.float64


def _sym(eigs, seed):
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(seed)))
    return Q @ torch.diag(torch.as_tensor(eigs, dtype=D)) @ Q.T


class Counting(tiny.Dense):
    """A dense operator that records the width of every product."""

    def __init__(self, A):
        super().__init__(A)
        self.widths = []

    def matmat(self, V):
        self.widths.append(V.shape[1])
        return super().matmat(V)


def _index(segs):
    return torch.cat([torch.arange(a, b) for a, b in segs])


def test_block_diagonal_operator_gives_each_blocks_eigenvalues():
    """H = diag(A1, A2, A3) with known spectra: the restricted spectra are exactly those spectra (Lanczos run
    to the block's dimension; the 8-dim block exactly diagonalized), and one product serves all blocks."""
    rng = np.random.default_rng(0)
    spectra = [np.sort(rng.uniform(-1, 5, 30)), np.sort(rng.exponential(3.0, 45)), np.linspace(-2, 2, 8)]
    A = torch.block_diag(*[_sym(e, i) for i, e in enumerate(spectra)])
    op = Counting(A)
    blocks = {"a": slice(0, 30), "b": range(30, 75), "c": [(75, 83)]}
    res = block_spectra(op, blocks, iters=45, vectors=1, exact_max=8)
    assert res.method == {"a": "lanczos", "b": "lanczos", "c": "exact"}
    for name, eigs in zip("abc", spectra):
        sd = res.spectra[name]
        assert sd.dim == len(eigs)
        np.testing.assert_allclose(np.sort(sd.nodes[0]), eigs, rtol=1e-9, atol=1e-9)
        assert sd.weights.sum() == pytest.approx(1.0, rel=1e-12)
    assert res.spectra["c"].trace == pytest.approx(spectra[2].sum(), abs=1e-12)   # exact: weights 1/8 each
    # 1 product for the exact block's 8 unit vectors, then one per step for both Lanczos blocks (45 steps;
    # block a stops after 30 and leaves the rendezvous)
    assert op.widths == [8] + [2] * 30 + [1] * 15
    assert res.meta["matmats"] == 46


def test_restricted_spectra_are_those_of_the_principal_submatrices():
    """With coupling between blocks the restricted spectrum is eig(H_BB), not a piece of eig(H)."""
    A = _sym(np.random.default_rng(1).normal(size=40), 3)
    blocks = {"x": [(0, 10), (25, 40)], "y": [(10, 25)]}
    res = block_spectra(tiny.Dense(A), blocks, iters=25, vectors=2, exact_max=0)
    for name, segs in blocks.items():
        idx = _index(segs)
        ref = torch.linalg.eigvalsh(A[idx][:, idx]).numpy()
        for row in res.spectra[name].nodes:
            np.testing.assert_allclose(np.sort(row), ref, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = tiny.Attention().to(D).eval()
    X, y = tiny.data((4, 3), n=16)
    return model, HessianOperator(model, tiny.loss, (X, y)), exact_hessian(model, tiny.loss, (X, y))


def test_restriction_of_an_exact_hessian_is_its_principal_submatrix(net):
    model, op, H = net
    found = block_segments(op)
    assert [n for n in found] == ["embed", "qkv", "proj", "norm", "head"]
    assert [k for k, _ in found.values()] == ["embedding", "linear", "linear", "norm", "linear"]
    for _, segs in found.values():
        idx = _index(segs)
        R = RestrictedOperator(op, segs)
        torch.testing.assert_close(R.matmat(torch.eye(R.dim, dtype=D)), H[idx][:, idx], rtol=1e-9, atol=1e-11)
    res = block_spectra(op, iters=4, vectors=2)   # blocks of ≤ 8 coordinates: exact
    for name, (_, segs) in found.items():
        if res.method[name] == "exact":
            idx = _index(segs)
            np.testing.assert_allclose(res.spectra[name].nodes[0], torch.linalg.eigvalsh(H[idx][:, idx]).numpy(),
                                       rtol=1e-9, atol=1e-10)


def test_batched_driver_equals_one_lanczos_run_per_block(net):
    model, op, _ = net
    seed, iters, vectors = 7, 6, 3
    calls = op.n_products
    res = block_spectra(op, iters=iters, vectors=vectors, seed=seed, exact_max=0)
    found = block_segments(op)
    assert res.meta["matmats"] == iters and res.meta["columns"] == iters * vectors * len(found)
    assert op.n_products - calls == res.meta["columns"]
    for i, (name, (_, segs)) in enumerate(found.items()):
        alone = lanczos(RestrictedOperator(op, segs), iters=iters, vectors=vectors, seed=seed + i)
        nodes, weights = alone.ritz()
        np.testing.assert_allclose(res.spectra[name].nodes, nodes, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.spectra[name].weights, weights, rtol=1e-8, atol=1e-12)
    # a budget of one column per product: the same spectra from more, narrower products
    small = block_spectra(op, iters=iters, vectors=vectors, seed=seed, exact_max=0, max_memory=1)
    assert small.meta["matmats"] == iters * len(found)
    for name in found:
        np.testing.assert_allclose(small.spectra[name].nodes, res.spectra[name].nodes, rtol=1e-10, atol=1e-12)


def test_a_large_float32_diagonal_operator_by_blocks():
    """10⁶ coordinates in float32, three blocks of known diagonal spectra: each block's isolated λmax and its
    trace (within the vector noise)."""
    n, sizes, scales = 1_000_000, (400_000, 300_000, 300_000), (1.0, 10.0, 100.0)
    parts = [torch.linspace(0, 1, m, dtype=torch.float32) ** 3 * c for m, c in zip(sizes, scales)]
    for p, c in zip(parts, scales):
        p[-1] = 2 * c   # an isolated top eigenvalue per block
    diag = torch.cat(parts)

    class Diagonal:
        dim, dtype, device = n, torch.float32, torch.device("cpu")

        def matmat(self, V):
            return diag[:, None] * V

    blocks = {"a": slice(0, 400_000), "b": slice(400_000, 700_000), "c": slice(700_000, n)}
    res = block_spectra(Diagonal(), blocks, iters=20, vectors=3)   # 3: the fewest with a vector-noise stderr
    for name, s in blocks.items():
        part = diag[s].double()
        sd = res.spectra[name]
        assert sd.lambda_max == pytest.approx(float(part.max()), rel=1e-3)
        assert abs(sd.trace - float(part.sum())) <= 5 * sd.trace_stderr + 1e-3 * float(part.sum())
    assert res.meta["matmats"] == 20


def test_bad_blocks_are_one_line_errors(net):
    model, op, _ = net
    with pytest.raises(LandscapeError, match="overlap"):
        block_spectra(tiny.Dense(torch.eye(6, dtype=D)), {"a": slice(0, 4), "b": slice(3, 6)})
    with pytest.raises(LandscapeError, match="outside"):
        block_spectra(tiny.Dense(torch.eye(6, dtype=D)), {"a": slice(0, 9)})
    with pytest.raises(LandscapeError, match="no parameters"):
        block_spectra(tiny.Dense(torch.eye(6, dtype=D)))
    with pytest.raises(LandscapeError, match="both"):
        block_spectra(op, {"x": "qkv.*", "y": ["qkv.weight"]})
    with pytest.raises(LandscapeError, match="matches no parameter"):
        block_spectra(op, {"x": "nothing.*"})


def test_a_failing_product_stops_every_block_and_is_raised():
    class Failing(tiny.Dense):
        def matmat(self, V):
            if self.calls == 3:
                raise RuntimeError("product failed")
            return super().matmat(V)

    op = Failing(_sym(np.linspace(1, 2, 30), 0))
    with pytest.raises(RuntimeError, match="product failed"):
        block_spectra(op, {"a": slice(0, 15), "b": slice(15, 30)}, iters=10, vectors=1, exact_max=0)


# ---- the default grouping of real models -------------------------------------------------------------

def _grouping(model):
    return [(b.name, b.kind) for b in param_blocks(model)]


def test_zoo_models_group_into_attention_mlp_norm_conv_blocks():
    from landscape.models import build

    vit = _grouping(build("vit1d", depth=2))
    assert vit == [("pos_embed", "embedding"), ("cls_token", "embedding"), ("patch_embed", "embedding"),
                   ("blocks.0.attn", "attention"), ("blocks.0.mlp", "mlp"), ("blocks.1.attn", "attention"),
                   ("blocks.1.mlp", "mlp"), ("head_norm", "norm"), ("head", "linear")]
    res = _grouping(build("resnet1d"))
    assert res[:4] == [("stem.0", "conv"), ("stem.1", "norm"), ("blocks.0.branch.0", "norm"),
                       ("blocks.0.branch.2", "conv")]
    assert {k for _, k in res} == {"conv", "norm", "linear"} and len(res) == 32


def test_hf_models_group_by_module_path():
    transformers = pytest.importorskip("transformers")
    from tests.objective import hf

    gpt2 = hf.gpt2()
    assert _grouping(gpt2) == [
        ("transformer.wte", "embedding"), ("transformer.wpe", "embedding"), ("transformer.h.0.ln_1", "norm"),
        ("transformer.h.0.attn", "attention"), ("transformer.h.0.ln_2", "norm"), ("transformer.h.0.mlp", "mlp"),
        ("transformer.ln_f", "norm")]   # lm_head is tied to wte: differentiated once, in wte's block
    blocks = param_blocks(gpt2)
    assert sum(len(b.params) for b in blocks) == len(list(gpt2.named_parameters()))
    bert = dict((b.name, b) for b in param_blocks(hf.bert("BertForMaskedLM")))
    layer = "bert.encoder.layer.0"
    assert bert[f"{layer}.attention"].kind == "attention"
    assert f"{layer}.attention.output.LayerNorm.weight" not in bert[f"{layer}.attention"].params
    assert bert[f"{layer}.attention.output.LayerNorm"].kind == "norm"
    assert bert[f"{layer}.mlp"].params == (f"{layer}.intermediate.dense.weight", f"{layer}.intermediate.dense.bias",
                                           f"{layer}.output.dense.weight", f"{layer}.output.dense.bias")
    cfg = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                                   intermediate_size=16, vocab_size=11, max_position_embeddings=16)
    llama = _grouping(transformers.LlamaForCausalLM(cfg))
    assert llama == [("model.embed_tokens", "embedding"), ("model.layers.0.self_attn", "attention"),
                     ("model.layers.0.mlp", "mlp"), ("model.layers.0.input_layernorm", "norm"),
                     ("model.layers.0.post_attention_layernorm", "norm"), ("model.norm", "norm"),
                     ("lm_head", "linear")]


def test_frozen_parameters_and_user_blocks():
    model = tiny.Residual()
    model.inp.requires_grad_(False)
    names = [b.name for b in param_blocks(model)]
    assert names == ["blocks.0.0", "blocks.0.2", "blocks.1.0", "blocks.1.2", "head"]
    user = param_blocks(model, {"residual": "blocks.*", "out": ["head.weight"]})
    assert [(b.name, b.kind, len(b.params)) for b in user] == [("residual", "user", 8), ("out", "user", 1)]
    assert [b.name for b in param_blocks(model, ["head.*", "blocks.1.*"])] == ["blocks.1.*", "head.*"]


def test_hf_gpt2_block_spectra_against_its_exact_hessian():
    """The model's own loss on padded dict batches: every block's exact spectrum equals eig of the exact
    Hessian's principal submatrix (blocks up to 400 coordinates are diagonalized exactly here)."""
    pytest.importorskip("transformers")
    from tests.objective import hf

    model = hf.gpt2()
    batches = hf.token_batches()
    op = HessianOperator(model, None, batches)
    H = exact_hessian(model, None, batches)
    res = block_spectra(op, iters=10, vectors=2, exact_max=400)
    found = block_segments(op)
    assert res.method["transformer.wte"] == "exact" and res.method["transformer.h.0.mlp"] == "lanczos"
    for name, (_, segs) in found.items():
        idx = _index(segs)
        ref = torch.linalg.eigvalsh(H[idx][:, idx]).numpy()
        sd = res.spectra[name]
        if res.method[name] == "exact":
            np.testing.assert_allclose(sd.nodes[0], ref, rtol=1e-8, atol=1e-10)
        else:   # 10 Lanczos steps: the extreme Ritz values lie inside the spectrum, the top one converged
            assert ref[0] - 1e-10 <= sd.nodes.min() and sd.nodes.max() <= ref[-1] + 1e-10
            assert sd.lambda_max == pytest.approx(ref[-1], rel=1e-6)


def test_selective_orthogonalization_blocks_equal_their_separate_runs():
    """With selective orthogonalization a block replays products at its own times; the rendezvous pairs whatever
    the threads ask for, and each block still equals its own run."""
    A = _sym(np.concatenate([np.linspace(0, 1, 55), [5.0, 9.0]]), 4)
    op = Counting(A)
    blocks = {"a": slice(0, 30), "b": slice(30, 57)}
    res = block_spectra(op, blocks, iters=20, vectors=2, exact_max=0, reorth="selective")
    for i, (name, s) in enumerate(blocks.items()):
        alone = lanczos(RestrictedOperator(tiny.Dense(A), [(s.start, s.stop)]), iters=20, vectors=2, seed=i,
                        reorth="selective")
        np.testing.assert_allclose(res.spectra[name].nodes, alone.ritz()[0], rtol=1e-9, atol=1e-12)
    assert res.meta["matmats"] >= 20
