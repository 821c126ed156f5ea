"""Block discovery: which modules are residual blocks, and where each block's update f meets its stream x.

A *block* maps the stream x_l (its first positional input) to x_{l+1} (its output). A *site* is one
place where an update f joins a stream x: a landscape `Connect` (its forward gets `(x, f)`), or, in
third-party blocks, a pair (module whose output is f, where the stream comes from). A stream source
is `"input"` (the block's input), a module name (that module's output, e.g. a ResNet `downsample`),
or a module name plus `":in"` (that module's input, e.g. `norm2:in` in a pre-LN transformer layer,
whose input is the stream after the attention update).

Recognised without help, outermost match first, in registration (= forward) order:

- landscape models: the children of `model.blocks`; sites are the `connect` / `connect_<tag>` children
  (anything with `reduce_dims`); singularity units are `branch` with incoming weights `branch_linear`
  (FC blocks: z = ReLU(W x + b)).
- ResNet blocks by structure (torchvision / timm `BasicBlock`, `Bottleneck`: `conv1, bn1, conv2, bn2`
  [+ `conv3, bn3`]): f is the output of the last-registered of `conv<k>`, `bn<k>`, `se`, `drop_path`
  (`bn2`/`bn3` in torchvision, after SE and drop-path in timm); the stream is `downsample` (or
  `shortcut`) when the block has one, else its input.
- ConvNeXt blocks by structure (timm `ConvNeXtBlock`: `conv_dw, norm, mlp, drop_path` [+ `shortcut`],
  x + drop_path(γ·mlp(norm(conv_dw(x))))): one site, f the output of `drop_path`, the stream the output
  of `shortcut` (an identity or a downsampling) when the block has one, else its input.
- Transformer layers by structure: pre-LN layers with norms `norm1/norm2`, `ln_1/ln_2`, `ln1/ln2` or
  `input_layernorm/post_attention_layernorm` around `attn`/`self_attn`/`self_attention`/`attention` and
  `mlp`/`ffn`/`feed_forward` — timm ViT `Block`, GPT-2, torchvision's ViT `EncoderBlock`, HF Llama and its
  copies (Mistral, Qwen2: `model.layers.*`): sites `attn` and `mlp`, f the output of `drop_path<k>` /
  `ls<k>` / (torchvision) the `dropout` after `self_attention` / the sublayer, stream the input of the norm
  in front of it. Layers that also normalize the sublayer outputs (Gemma 2's `pre_feedforward_layernorm`)
  are not claimed. `nn.TransformerEncoderLayer`: f = `dropout1` / `dropout2` output, stream the input of
  `norm1` / `norm2` when `norm_first`, else the block input / `norm1` output (post-LN).
- HF BERT-style post-LN layers (`bert.encoder.layer.*`: children `attention`, `intermediate`, `output`,
  with `attention.output` and `output` each a dense → dropout → LayerNorm(· + stream) module): site
  `attn` with f the output of `attention.output.dropout` and the layer input as stream; site `mlp` with
  f the output of `output.dropout` and the input of `intermediate` (the attention sublayer's output)
  as stream. RoBERTa, ELECTRA and other BERT copies share the structure.

Anything else: pass `blocks=` (exact qualified names or glob patterns, matched segment by segment
with `fnmatch`, so `layer*.*` is `layer1.0, layer1.1, ...` but not `layer1.0.conv1`) and, for stream
statistics, `branch=` and `stream=` (names relative to each block).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn

from landscape.errors import LandscapeError


@dataclass(frozen=True)
class Site:
    """Where an update f joins a stream x. Names are qualified from the model root."""

    tag: str
    connect: str | None = None
    branch: str | None = None
    stream: str = "input"


@dataclass(frozen=True)
class Block:
    """A block: qualified name, the module, how it was recognised, its stream sites and singularity units."""

    name: str
    module: nn.Module = field(compare=False, repr=False)
    kind: str
    sites: tuple[Site, ...] = ()
    units: str | None = None
    weights: str | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str) -> nn.Module:
        """The module behind a qualified name used by this block.

        Args:
            name: a qualified module name from this block's sites, units or weights (`:in` is ignored).

        Returns:
            The module.
        """
        return self.modules[name.removesuffix(":in")]

    def site_label(self, site: Site) -> str:
        """The record name of a site.

        Args:
            site: one of this block's sites.

        Returns:
            The block name, plus `:tag` when the block has several sites.
        """
        return f"{self.name}:{site.tag}" if len(self.sites) > 1 and site.tag else self.name


_BRANCH_LAST = re.compile(r"(conv|bn)\d+|se|drop_path")
_NORM_PAIRS = (("norm1", "norm2"), ("ln_1", "ln_2"), ("ln1", "ln2"), ("input_layernorm", "post_attention_layernorm"))
_ATTN = ("attn", "self_attn", "self_attention", "attention")
_MLP = ("mlp", "ffn", "feed_forward")
_CONVNEXT = ("conv_dw", "norm", "mlp", "drop_path")
_NOT_PRE_LN = ("pre_feedforward_layernorm",)   # sublayer outputs normalized too: the norm input is not the stream


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _children(module: nn.Module) -> dict[str, nn.Module]:
    return dict(module.named_children())


def _first(children: dict, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in children), None)


def _connect_sites(name: str, children: dict) -> tuple[Site, ...]:
    sites = []
    for cname, child in children.items():
        if (cname == "connect" or cname.startswith("connect_")) and hasattr(child, "reduce_dims"):
            sites.append(Site(tag=cname.removeprefix("connect").lstrip("_"), connect=_join(name, cname)))
    return tuple(sites)


def _resnet_sites(name: str, children: dict) -> tuple[Site, ...]:
    branch = [c for c in children if _BRANCH_LAST.fullmatch(c)][-1]
    short = _first(children, ("downsample", "shortcut"))
    stream = _join(name, short) if short else "input"
    return (Site(tag="conv", branch=_join(name, branch), stream=stream),)


def _transformer_sites(name: str, module: nn.Module, children: dict) -> tuple[Site, ...]:
    if all(c in children for c in ("self_attn", "linear1", "linear2", "dropout1", "dropout2")):
        if getattr(module, "norm_first", False):
            streams = (_join(name, "norm1") + ":in", _join(name, "norm2") + ":in")
        else:
            streams = ("input", _join(name, "norm1"))
        return (Site("attn", branch=_join(name, "dropout1"), stream=streams[0]),
                Site("mlp", branch=_join(name, "dropout2"), stream=streams[1]))
    norms = next(p for p in _NORM_PAIRS if all(n in children for n in p))
    subs = (_first(children, _ATTN), _first(children, _MLP))
    sites = []
    for k, (tag, sub, norm) in enumerate(zip(("attn", "mlp"), subs, norms), start=1):
        after = ("dropout",) if sub == "self_attention" else ()   # torchvision: dropout(self_attention(·))
        branch = _first(children, (f"drop_path{k}", f"ls{k}", *after, sub))
        sites.append(Site(tag, branch=_join(name, branch), stream=_join(name, norm) + ":in"))
    return tuple(sites)


def _is_bert_layer(children: dict) -> bool:
    if not all(c in children for c in ("attention", "intermediate", "output")):
        return False
    attn_out = _children(children["attention"]).get("output")
    parts = ("dense", "dropout", "LayerNorm")
    return (attn_out is not None and all(c in _children(attn_out) for c in parts)
            and all(c in _children(children["output"]) for c in parts))


def _bert_sites(name: str) -> tuple[Site, ...]:
    return (Site("attn", branch=_join(name, "attention.output.dropout"), stream="input"),
            Site("mlp", branch=_join(name, "output.dropout"), stream=_join(name, "intermediate") + ":in"))


def _convnext_sites(name: str, children: dict) -> tuple[Site, ...]:
    stream = _join(name, "shortcut") if "shortcut" in children else "input"
    return (Site(tag="conv", branch=_join(name, "drop_path"), stream=stream),)


def _recognise(name: str, module: nn.Module) -> tuple[str, tuple[Site, ...]] | None:
    """(kind, sites) when `module` is a block we know by structure, else None."""
    children = _children(module)
    sites = _connect_sites(name, children)
    if sites:
        return "landscape", sites
    if all(c in children for c in ("conv1", "bn1", "conv2", "bn2")):
        kind = "resnet_bottleneck" if "conv3" in children and "bn3" in children else "resnet_basic"
        return kind, _resnet_sites(name, children)
    if _is_bert_layer(children):
        return "bert", _bert_sites(name)
    if all(c in children for c in _CONVNEXT):
        return "convnext", _convnext_sites(name, children)
    is_encoder_layer = all(c in children for c in ("self_attn", "linear1", "linear2", "norm1", "norm2"))
    has_norms = any(all(n in children for n in p) for p in _NORM_PAIRS) and not _first(children, _NOT_PRE_LN)
    if is_encoder_layer or (has_norms and _first(children, _ATTN) and _first(children, _MLP)):
        return "transformer", _transformer_sites(name, module, children)
    return None


def _match(pattern: str, name: str) -> bool:
    """Segment-wise fnmatch: `*` never crosses a dot, so patterns select modules at one depth."""
    parts, segs = pattern.split("."), name.split(".")
    return len(parts) == len(segs) and all(fnmatchcase(s, p) for s, p in zip(segs, parts))


def _select(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    chosen: dict[str, None] = {}
    for pat in patterns:
        hits = [n for n in names if n == pat or _match(pat, n)]
        if not hits:
            raise LandscapeError(f"block pattern {pat!r} matches no module of {type(model).__name__}")
        chosen.update(dict.fromkeys(hits))
    order = {n: i for i, n in enumerate(names)}
    return sorted(chosen, key=order.__getitem__)


def _auto_names(model: nn.Module) -> list[str]:
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks):
        return [f"blocks.{n}" for n, _ in blocks.named_children()]
    found: list[str] = []
    for name, module in model.named_modules():
        if name and not any(name.startswith(f + ".") for f in found) and _recognise(name, module):
            found.append(name)
    if not found:
        raise LandscapeError(f"no residual blocks recognised in {type(model).__name__}; "
                             "pass blocks=[module names or glob patterns]")
    return found


def _attr_path(block: str, module: nn.Module, attr: str) -> str | None:
    """Qualified name of the submodule that attribute `attr` refers to (a child or a property)."""
    obj = getattr(module, attr, None)
    if isinstance(obj, nn.Module):
        return next((_join(block, n) for n, m in module.named_modules() if m is obj and n), None)
    return None


def _resolve(model: nn.Module, block: str, rel: str, what: str) -> str:
    """Qualify a block-relative module name (`bn2`, `norm2:in`) and check that it exists."""
    base, _, suffix = rel.partition(":")
    if suffix not in ("", "in"):
        raise LandscapeError(f"{what} {rel!r}: the only suffix is ':in' (that module's input)")
    full = _join(block, base)
    try:
        model.get_submodule(full)
    except AttributeError:
        raise LandscapeError(f"{what} {rel!r} is not a submodule of block {block!r}") from None
    return full + (":in" if suffix else "")


def _stream_for(model: nn.Module, block: str, stream: str | Sequence[str]) -> str:
    """The first stream source of `stream` (a name or a list of alternatives) that exists in the block."""
    options = [stream] if isinstance(stream, str) else list(stream)
    for opt in options:
        if opt == "input":
            return "input"
        try:
            return _resolve(model, block, opt, "stream")
        except LandscapeError:
            continue
    raise LandscapeError(f"none of the stream sources {options} exists in block {block!r}")


def find_blocks(model: nn.Module, blocks: str | Sequence[str] | Sequence[Block] | None = None, *,
                branch: str | None = None, stream: str | Sequence[str] = "input",
                units: str | None = None, weights: str | None = None) -> list[Block]:
    """The blocks of `model`, in forward order, with their stream sites and singularity units.

    Args:
        model: the model.
        blocks: None (recognise; see the module docstring), qualified names / glob patterns, or
            `Block`s from an earlier call (returned unchanged).
        branch: block-relative name of the module whose output is the update f; replaces the
            recognised sites with one site per block.
        stream: with `branch`: `"input"`, a block-relative module name (its output is the stream) or
            `name:in` (its input); a list tries each in turn (`["downsample", "input"]`).
        units: block-relative name of the module whose output are the unit activations z (default: the
            block's `branch` when it also has `branch_linear`, as landscape FC blocks do; else none).
        weights: block-relative name of the layer with the units' incoming weights (default: the block's
            `branch_linear`, else none).

    Returns:
        One `Block` per block; a block whose structure is not recognised has kind "module" and no sites
        unless `branch` is given.
    """
    if blocks is not None and not isinstance(blocks, str) and all(isinstance(b, Block) for b in blocks):
        return list(blocks)
    names = _auto_names(model) if blocks is None else _select(model, [blocks] if isinstance(blocks, str)
                                                                else list(blocks))
    out = []
    for name in names:
        module = model.get_submodule(name)
        kind, sites = _recognise(name, module) or ("module", ())
        if branch is not None:
            sites = (Site(tag="", branch=_resolve(model, name, branch, "branch"),
                          stream=_stream_for(model, name, stream)),)
        default_weights = _attr_path(name, module, "branch_linear")
        default_units = _attr_path(name, module, "branch") if default_weights else None
        unit = _resolve(model, name, units, "units") if units else default_units
        weight = _resolve(model, name, weights, "weights") if weights else default_weights
        used = [n for s in sites for n in (s.connect, s.branch, s.stream) if n and n != "input"]
        used = [n.removesuffix(":in") for n in [*used, unit, weight] if n]
        out.append(Block(name=name, module=module, kind=kind, sites=sites, units=unit, weights=weight,
                         modules={n: model.get_submodule(n) for n in used}))
    return out
