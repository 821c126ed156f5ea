"""The probe context manager leaves no residue: no hooks after exit or after an exception, outputs,
gradients and state_dict unchanged, no `.grad` of its own, no references to the graph; bad input is
a one-line LandscapeError."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.probes import METRICS, ProbeOptions, find_blocks, probe, run_probes, stream_stats

from .lookalikes import FCNet, TinyResNet, TinyViT
from .references import reference_stream


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def run(model, X, y, metrics=None):
    out = model(X)
    F.cross_entropy(out, y).backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize(("make", "shape"), [(lambda: FCNet(depth=3), (5, 6)),
                                             (lambda: TinyResNet().train(), (3, 2, 6, 6)),
                                             (lambda: TinyViT(), (2, 3, 4))])
def test_outputs_gradients_and_state_are_unchanged(make, shape):
    torch.manual_seed(0)
    model = make()
    twin = copy.deepcopy(model)
    X, y = torch.randn(*shape), torch.randint(0, 3, (shape[0],))
    metrics = [m for m in METRICS if m != "singularity" or isinstance(model, FCNet)]
    assert hook_count(model) == 0
    with probe(model, metrics=metrics) as p:
        assert hook_count(model) > 0
        out, grads = run(model, X, y)
    assert hook_count(model) == 0
    ref_out, ref_grads = run(twin, X, y)
    assert torch.equal(out, ref_out)
    for k in grads:
        assert torch.equal(grads[k], ref_grads[k]), k
    for (k, v), (_, w) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(v, w), k  # BatchNorm running statistics included: the probe's passes add none
    assert p.records


def test_hooks_are_removed_after_an_exception():
    model = FCNet(depth=3)
    with pytest.raises(RuntimeError, match="boom"):
        with probe(model, metrics=METRICS) as p:
            out = model(torch.randn(2, 6))
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    grads = []
    out.register_hook(grads.append)
    out.sum().backward()  # the tensor hooks on block outputs are gone too: nothing reaches the probe
    assert grads and not p._grad._handles and not p._grad._got


def test_error_inside_forward_also_cleans_up():
    model = TinyResNet()
    with pytest.raises(RuntimeError):
        with probe(model, metrics=("grad_norm", "stream")):
            model(torch.randn(2, 3, 6, 6))  # wrong channel count
    assert hook_count(model) == 0


def test_probe_alone_creates_no_grad_and_keeps_no_graph():
    model = FCNet(depth=3)
    X = torch.randn(4, 6, requires_grad=True)
    with probe(model, metrics=("stream", "singularity", "jacobian")):
        model(X)
    assert X.grad is None and all(p.grad is None for p in model.parameters())
    run_probes(model, F.cross_entropy, (torch.randn(4, 6), torch.randint(0, 3, (4,))), metrics=METRICS)
    assert all(p.grad is None for p in model.parameters())
    seen = []
    handle = model.blocks[1].register_forward_hook(lambda m, a, o: seen.append(weakref.ref(o)))
    with probe(model, metrics=METRICS) as p:
        F.cross_entropy(model(X), torch.zeros(4, dtype=torch.long)).backward()
    handle.remove()
    records = p.records
    gc.collect()
    assert seen[0]() is None and records  # the block output was freed: the probe holds no reference


def test_a_probe_cannot_be_attached_twice_and_can_be_reused():
    model = FCNet(depth=2)
    p = probe(model, metrics="stream")
    with p:
        with pytest.raises(LandscapeError, match="already attached"):
            p.attach()
        model(torch.randn(2, 6))
    with p:
        model(torch.randn(2, 6))
    assert hook_count(model) == 0
    assert len({r["block"] for r in p.records}) == 2


def test_bad_input_is_a_one_line_landscape_error():
    model = FCNet(depth=2)
    cases = [dict(metrics="hessian"), dict(reduce="pixel"), dict(blocks="nope.*"),
             dict(blocks="inp", metrics="stream"), dict(blocks="inp", metrics="singularity"),
             dict(blocks="blocks.*", branch="missing", metrics="stream")]
    cases += [dict(epsilon=1e-3), dict(options=ProbeOptions(), eps=1e-3)]   # unknown option; options twice
    for kw in cases:
        with pytest.raises(LandscapeError) as e:
            probe(model, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(LandscapeError, match="no residual blocks"):
        find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(LandscapeError, match="targets"):
        run_probes(model, None, torch.randn(3, 6), metrics="grad_norm")
    with pytest.raises(LandscapeError, match="no data"):
        run_probes(model, None, [], metrics="stream")


class InPlaceConnect(nn.Module):
    reduce_dims = (-1,)

    def forward(self, x, f):
        return f.add_(x)


class InPlaceBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.connect = InPlaceConnect()

    def forward(self, x):
        return self.connect(x, torch.relu(self.lin(x)))


class OverwrittenShortcut(nn.Module):
    def __init__(self):
        super().__init__()
        self.short, self.branch = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.short(x).add_(self.branch(x))


def test_tensors_overwritten_in_place_are_read_before_or_reported():
    torch.manual_seed(0)
    model = nn.Sequential(InPlaceBlock(), InPlaceBlock())
    X = torch.randn(4, 3)
    with probe(model, metrics="stream") as p:
        model(X)
    got = {(r["block"], r["metric"]): r["value"] for r in p.records}
    f = torch.relu(model[0].lin(X))
    for m, v in stream_stats(X, f).items():  # the update as the connect received it, before f += x
        assert got[("0", m)] == pytest.approx(v, rel=1e-12)
    other = nn.Sequential(OverwrittenShortcut(), OverwrittenShortcut())
    with pytest.raises(LandscapeError, match="modified in place"):
        with probe(other, blocks="*", metrics="stream", branch="branch", stream="short"):
            other(X)
    assert hook_count(other) == 0


def test_options_as_keywords_or_one_probe_options_give_the_same_records():
    torch.manual_seed(0)
    model, X = FCNet(depth=3), torch.randn(5, 6)
    runs = []
    for kw in (dict(reduce="global", eps=1e-3, threshold=0.5),
               dict(options=ProbeOptions(reduce="global", eps=1e-3, threshold=0.5))):
        with probe(model, metrics=("stream", "singularity"), step=7, **kw) as p:
            model(X)
        runs.append(p.records)
        assert p.options == ProbeOptions(reduce="global", eps=1e-3, threshold=0.5)
    assert runs[0] == runs[1] and {r["step"] for r in runs[0]} == {7}
    with probe(model, metrics="stream") as p:                      # the defaults: another ε, reduce, threshold
        model(X)
    assert p.records != runs[0]


def test_glob_patterns_match_one_depth():
    model = TinyResNet()
    assert [b.name for b in find_blocks(model, "layer*.*")] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert [b.name for b in find_blocks(model, ["layer2.?", "layer1.0"])] == ["layer1.0", "layer2.0", "layer2.1"]
    assert [b.kind for b in find_blocks(model, "layer1")] == ["module"]


def _tiny_bert(transformers):
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=12, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)  # random init, no download
            self.head = nn.Linear(16, 3)

        def forward(self, ids):
            return self.head(self.bert(input_ids=ids).last_hidden_state[:, 0])

    return Classifier()


def test_bert_layers_are_found_without_blocks_and_match_a_hand_written_reference():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _tiny_bert(transformers)
    blocks = find_blocks(model)
    assert [(b.name, b.kind) for b in blocks] == [("bert.encoder.layer.0", "bert"), ("bert.encoder.layer.1", "bert")]
    assert [s.tag for s in blocks[0].sites] == ["attn", "mlp"]
    ids, y = torch.randint(0, 40, (4, 10)), torch.randint(0, 3, (4,))
    seen: dict[str, torch.Tensor] = {}

    def keep(name, pre):
        def hook(module, args, *rest):
            t = args[0] if pre else rest[0]
            t = t[0] if isinstance(t, tuple) else t
            if not pre:
                t.retain_grad()
            seen[name] = t
        return hook

    handles = []
    for i, layer in enumerate(model.bert.encoder.layer):
        handles += [layer.register_forward_pre_hook(keep(f"x{i}", True)),
                    layer.register_forward_hook(keep(f"out{i}", False)),
                    layer.attention.output.dropout.register_forward_hook(keep(f"fa{i}", False)),
                    layer.intermediate.register_forward_pre_hook(keep(f"xm{i}", True)),
                    layer.output.dropout.register_forward_hook(keep(f"fm{i}", False))]
    with probe(model, metrics=("grad_norm", "stream")) as p:
        out = model(ids)
        seen["x0"].retain_grad()
        F.cross_entropy(out, y).backward()
    for h in handles:
        h.remove()
    got = {(r["block"], r["metric"]): r["value"] for r in p.records}
    for i in range(2):
        name = f"bert.encoder.layer.{i}"
        for tag, x, f in (("attn", f"x{i}", f"fa{i}"), ("mlp", f"xm{i}", f"fm{i}")):
            for m, v in reference_stream(seen[x].detach(), seen[f].detach()).items():
                assert got[(f"{name}:{tag}", m)] == pytest.approx(v, rel=1e-6, abs=1e-9), (name, tag, m)
        g_in = seen["x0"].grad if i == 0 else seen[f"out{i - 1}"].grad
        assert got[(name, "grad_norm_in")] == pytest.approx(float(g_in.double().norm()), rel=1e-6)
        assert got[(name, "grad_norm_out")] == pytest.approx(float(seen[f"out{i}"].grad.double().norm()), rel=1e-6)


def test_gpt2_blocks_are_found_without_blocks():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=30, n_positions=8, n_embd=8, n_layer=2, n_head=2)
    model = transformers.GPT2Model(cfg)
    assert [b.name for b in find_blocks(model)] == ["h.0", "h.1"]
    assert [s.tag for s in find_blocks(model)[0].sites] == ["attn", "mlp"]


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_timm_models_are_found_without_blocks(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    if name == "resnet":
        model = timm.create_model("resnet18", pretrained=False, num_classes=3)
        X, expect = torch.randn(2, 3, 32, 32), [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    else:
        from timm.models.vision_transformer import VisionTransformer
        model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3)
        X, expect = torch.randn(2, 3, 16, 16), ["blocks.0", "blocks.1"]
    assert [b.name for b in find_blocks(model)] == expect
    with probe(model.eval(), metrics=("grad_norm", "stream")) as p:
        F.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    metrics = {r["metric"] for r in p.records}
    assert {"grad_ratio", "rho_ortho", "cos_x_out"} <= metrics
    assert all(torch.isfinite(torch.tensor(r["value"])) for r in p.records)
