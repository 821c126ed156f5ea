"""Block discovery on third-party structures (torchvision ViT, timm ConvNeXt, HF Llama) and the records it
leads to, against references taken with plain hooks and `retain_grad` (independent of landscape.probes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.probes import find_blocks, probe

from .lookalikes import TimmConvNeXt, TorchvisionViT
from .references import reference_stream


class _Seen:
    """Plain hooks that keep module inputs ("in") or outputs ("out") by key; block inputs/outputs retain grad."""

    def __init__(self, model: nn.Module, where: dict[str, tuple[str, str]]):
        self.t: dict[str, torch.Tensor] = {}
        self.handles = []
        for key, (name, side) in where.items():
            module = model.get_submodule(name)
            if side == "in":
                self.handles.append(module.register_forward_pre_hook(self._keep(key, True)))
            else:
                self.handles.append(module.register_forward_hook(self._keep(key, False)))

    def _keep(self, key, pre):
        def hook(module, args, *rest):
            t = args[0] if pre else rest[0]
            t = t[0] if isinstance(t, tuple) else t
            if key.startswith(("block_in", "block_out")):
                t.retain_grad()
            self.t[key] = t.detach().clone() if key.startswith("f") else t
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _check(model, blocks, sites, loss_of, *, blocks_arg=None):
    """Run grad_norm + stream on `model` and compare with the plain-hook references.

    sites: {record block label: (stream (module, side), update (module, side))}."""
    where = {}
    for i, b in enumerate(blocks):
        where[f"block_in{i}"], where[f"block_out{i}"] = (b, "in"), (b, "out")
    for label, (x, f) in sites.items():
        where[f"x:{label}"], where[f"f:{label}"] = x, f
    seen = _Seen(model, where)
    try:
        with probe(model, blocks_arg, metrics=("grad_norm", "stream")) as p:
            loss_of(model).backward()
    finally:
        seen.remove()
    got = {(r["block"], r["metric"]): r["value"] for r in p.records}
    for label in sites:
        for metric, value in reference_stream(seen.t[f"x:{label}"].detach(), seen.t[f"f:{label}"]).items():
            assert got[(label, metric)] == pytest.approx(value, rel=1e-9, abs=1e-12), (label, metric)
    for i, b in enumerate(blocks):
        g_in, g_out = seen.t[f"block_in{i}"].grad, seen.t[f"block_out{i}"].grad
        assert got[(b, "grad_norm_in")] == pytest.approx(float(g_in.norm()), rel=1e-9)
        assert got[(b, "grad_norm_out")] == pytest.approx(float(g_out.norm()), rel=1e-9)
        assert got[(b, "grad_ratio")] == pytest.approx(float(g_in.norm() / g_out.norm()), rel=1e-9)
    return p


def test_torchvision_vit_encoder_blocks_are_found_and_measured():
    torch.manual_seed(0)
    model = TorchvisionViT().train()                               # dropout p = 0: train mode is deterministic
    names = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    found = find_blocks(model)
    assert [(b.name, b.kind) for b in found] == [(n, "transformer") for n in names]
    assert [(s.tag, s.branch, s.stream) for s in found[0].sites] == [
        ("attn", f"{names[0]}.dropout", f"{names[0]}.ln_1:in"), ("mlp", f"{names[0]}.mlp", f"{names[0]}.ln_2:in")]
    X, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1])
    sites = {}
    for n in names:
        sites[f"{n}:attn"] = ((f"{n}.ln_1", "in"), (f"{n}.dropout", "out"))
        sites[f"{n}:mlp"] = ((f"{n}.ln_2", "in"), (f"{n}.mlp", "out"))
    _check(model, names, sites, lambda m: F.cross_entropy(m(X), y))


def test_timm_convnext_blocks_are_found_and_measured():
    torch.manual_seed(0)
    model = TimmConvNeXt().eval()
    names = ["stages.0.blocks.0", "stages.0.blocks.1", "stages.1.blocks.0"]
    found = find_blocks(model)
    assert [(b.name, b.kind) for b in found] == [(n, "convnext") for n in names]
    assert [(s.branch, s.stream) for s in found[0].sites] == [(f"{names[0]}.drop_path", f"{names[0]}.shortcut")]
    X, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1])
    sites = {n: ((f"{n}.shortcut", "out"), (f"{n}.drop_path", "out")) for n in names}
    _check(model, names, sites, lambda m: F.cross_entropy(m(X), y))


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).double().eval()     # random init from the config, no download


def _lm_loss(ids):
    def loss(model):
        logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    return loss


@pytest.mark.parametrize("blocks_arg", [None, "model.layers.*"])
def test_hf_llama_decoder_layers_are_found_and_measured(blocks_arg):
    model = _tiny_llama()
    names = ["model.layers.0", "model.layers.1"]
    found = find_blocks(model, blocks_arg)
    assert [(b.name, b.kind) for b in found] == [(n, "transformer") for n in names]
    assert [(s.tag, s.branch, s.stream) for s in found[1].sites] == [
        ("attn", f"{names[1]}.self_attn", f"{names[1]}.input_layernorm:in"),
        ("mlp", f"{names[1]}.mlp", f"{names[1]}.post_attention_layernorm:in")]
    ids = torch.randint(0, 32, (2, 7), generator=torch.Generator().manual_seed(1))
    sites = {}
    for n in names:
        sites[f"{n}:attn"] = ((f"{n}.input_layernorm", "in"), (f"{n}.self_attn", "out"))
        sites[f"{n}:mlp"] = ((f"{n}.post_attention_layernorm", "in"), (f"{n}.mlp", "out"))
    _check(model, names, sites, _lm_loss(ids), blocks_arg=blocks_arg)


def test_an_unrecognised_block_names_itself_and_the_way_out():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(LandscapeError, match=r"no stream sites in the probed blocks \(0, 1: structure not "
                                             r"recognised\); name the update's module with branch="):
        probe(model, blocks="*", metrics="stream")
    assert [b.kind for b in find_blocks(model, "*")] == ["module", "module"]
