"""Parameter blocks: which parameters form one block of the Hessian (an attention, an MLP, a norm, a conv...).

    param_blocks(model)                                  # the default grouping, by module path
    param_blocks(model, {"attn": "*.attn.*", "mlp": ["*.mlp.*"]})   # user blocks: names or fnmatch patterns
    param_blocks(model, ["blocks.0.*", "blocks.1.*"])    # one block per pattern, named by it

The default grouping walks the module tree from the root:

- an attention module (class name containing "Attention", or a child named attn / self_attn / attention /
  self_attention) is one block of kind "attention" holding every parameter below it (Q, K, V and the output
  projection: GPT-2's c_attn + c_proj, Llama's q/k/v/o_proj, BERT's self.query/key/value + output.dense);
- an MLP module (class name containing "MLP", "FeedForward" or "FFN", or a child named mlp / ffn /
  feed_forward) is one block of kind "mlp"; a BERT-style layer, whose feed-forward is split between children
  `intermediate` and `output`, gets one "mlp" block `<layer>.mlp` holding both;
- a normalization module (LayerNorm, RMSNorm, BatchNorm, GroupNorm: any class whose name contains "Norm")
  is always its own block of kind "norm", also inside an attention or MLP (BERT's output.LayerNorm);
- every other module with parameters of its own is one block named by its path, of kind "embedding"
  (nn.Embedding, or a path containing "embed"), "conv", "linear" (nn.Linear, HF Conv1D) or "other";
  parameters held directly by a container (a ViT's pos_embed, cls_token) are one block each, named by the
  parameter, of kind "embedding" when the name contains embed / pos / token, else "other".

Only the differentiated parameters count (`params`, default: those with requires_grad; a tied weight once,
under its first name). Blocks are listed in the flat order of the curvature operators (named_parameters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.objective import select_params

KINDS = ("embedding", "attention", "mlp", "norm", "conv", "linear", "other")
_ATTENTION_NAMES = ("attn", "self_attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "ffn", "feed_forward")
_MLP_CLASSES = ("MLP", "FeedForward", "FFN")


@dataclass(frozen=True)
class ParamBlock:
    """One block: its name, kind (one of KINDS, or "user" for user-defined blocks) and parameter names
    (in flat order)."""

    name: str
    kind: str
    params: tuple[str, ...]


def _is_norm(module: nn.Module) -> bool:
    return "Norm" in type(module).__name__


def _is_attention(name: str, module: nn.Module) -> bool:
    return "Attention" in type(module).__name__ or name.rpartition(".")[2] in _ATTENTION_NAMES


def _is_mlp(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return any(c in cls for c in _MLP_CLASSES) or name.rpartition(".")[2] in _MLP_NAMES


def _leaf_kind(name: str, module: nn.Module) -> str:
    """Kind of a module that holds parameters of its own and is neither attention nor MLP."""
    if _is_norm(module):
        return "norm"
    if isinstance(module, nn.Embedding) or "embed" in name.rpartition(".")[2].lower():
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
        return "linear"
    return "other"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _own(module: nn.Module, path: str, chosen: set[str]) -> list[str]:
    """Full names of the chosen parameters `module` holds itself (not its children's)."""
    return [_join(path, n) for n in module._parameters if _join(path, n) in chosen]


def _below(module: nn.Module, path: str, chosen: set[str], out: list[ParamBlock]) -> list[str]:
    """Chosen parameters below `module`, except those of norm submodules, which are appended to `out` as
    their own "norm" blocks."""
    names: list[str] = []
    for sub_path, sub in module.named_modules(prefix=path):
        if _is_norm(sub) and sub is not module:
            own = [n for n in (_join(sub_path, p) for p, _ in sub.named_parameters()) if n in chosen]
            if own:
                out.append(ParamBlock(sub_path, "norm", tuple(own)))
            continue
        if any(sub_path.startswith(b.name + ".") for b in out if b.kind == "norm"):
            continue
        names += _own(sub, sub_path, chosen)
    return names


def _walk(module: nn.Module, path: str, chosen: set[str], out: list[ParamBlock]) -> None:
    """Append the default blocks of `module` (at `path`) to `out` (see the module docstring)."""
    if path and not _is_norm(module) and (_is_attention(path, module) or _is_mlp(path, module)):
        kind = "attention" if _is_attention(path, module) else "mlp"
        names = _below(module, path, chosen, out)
        if names:
            out.append(ParamBlock(path, kind, tuple(names)))
        return
    own = _own(module, path, chosen)
    if own and next(module.children(), None) is None:
        out.append(ParamBlock(path, _leaf_kind(path, module), tuple(own)))
    else:
        for n in own:
            low = n.rpartition(".")[2].lower()
            kind = "embedding" if any(k in low for k in ("embed", "pos", "token")) else "other"
            out.append(ParamBlock(n, kind, (n,)))
    children = dict(module.named_children())
    if "intermediate" in children and "output" in children:  # a BERT-style layer: its MLP is split in two
        names = []
        for key in ("intermediate", "output"):
            names += _below(children.pop(key), _join(path, key), chosen, out)
        if names:
            out.append(ParamBlock(_join(path, "mlp"), "mlp", tuple(names)))
    for name, child in children.items():
        _walk(child, _join(path, name), chosen, out)


def _in_flat_order(blocks: list[ParamBlock], order: list[str]) -> list[ParamBlock]:
    pos = {n: i for i, n in enumerate(order)}
    ordered = [ParamBlock(b.name, b.kind, tuple(sorted(b.params, key=pos.__getitem__))) for b in blocks]
    return sorted(ordered, key=lambda b: pos[b.params[0]])


def param_blocks(model: nn.Module, blocks: Mapping[str, str | Iterable[str]] | Sequence[str] | None = None,
                 params: Iterable[str | Tensor] | None = None) -> list[ParamBlock]:
    """The parameter blocks of `model`, in flat order.

    Args:
        model: any nn.Module.
        blocks: None for the default grouping (module docstring); a mapping {block name: names or fnmatch
            patterns}, or a sequence of patterns (one block each, named by the pattern), for user blocks
            (kind "user"). A parameter in two user blocks is an error; parameters in none are left out.
        params: the differentiated parameters (`landscape.objective.select_params`; default: every parameter
            with requires_grad).

    Returns:
        The blocks, each with at least one parameter; together they hold every chosen parameter (default
        grouping) or those the user named.
    """
    order = select_params(model, params)
    chosen = set(order)
    if blocks is None:
        out: list[ParamBlock] = []
        _walk(model, "", chosen, out)
        return _in_flat_order(out, order)
    spec = {p: p for p in blocks} if not isinstance(blocks, Mapping) else dict(blocks)
    if isinstance(blocks, str) or not spec:
        raise LandscapeError("blocks: pass a mapping {name: patterns} or a list of patterns, e.g. ['blocks.0.*']")
    out, owner = [], {}
    for name, patterns in spec.items():
        names = [n for n in select_params(model, patterns) if n in chosen]
        if not names:
            raise LandscapeError(f"blocks: block {name!r} holds no differentiated parameter")
        for n in names:
            if n in owner:
                raise LandscapeError(f"blocks: parameter {n!r} is in both {owner[n]!r} and {name!r}")
            owner[n] = name
        out.append(ParamBlock(str(name), "user", tuple(names)))
    return _in_flat_order(out, order)
