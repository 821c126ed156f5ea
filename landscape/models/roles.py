"""What each entry of `model.blocks` is, so per-block statistics can be split by role (docs/methods.md §C.4).

    block_roles(model) -> {"blocks.0": "input", "blocks.1": "residual", ..., "blocks.5": "transition", ...}

Roles:
- "input": block 0 of the FC nets (input dim → width, never a skip);
- "transition": a dimension-changing block — a ProcResNet `Transition` / `Transition1d`, a residual
  block whose shortcut is a projection rather than the identity, or (skip removed) a block whose convs
  stride or change the channel count;
- "plain": a same-shape block whose connection is `none` (no skip);
- "residual": every other block (identity, scaled, normalized, orthogonal or dense skips).
Theorem-1-type norm-preservation statistics belong to the "residual" (and, for the plain controls,
"plain") blocks; "input" and "transition" blocks have no identity skip and are reported on their own.
Models without `blocks` give {}.
"""

from __future__ import annotations

from torch import nn

ROLES = ("input", "transition", "plain", "residual")


def _connects(block: nn.Module) -> list[nn.Module]:
    return [m for name, m in block.named_children() if name == "connect" or name.startswith("connect_")]


def block_role(model: nn.Module, index: int) -> str:
    """The role of `model.blocks[index]` (see the module docstring).

    Args:
        model: a zoo model with `blocks`.
        index: the block's index.

    Returns:
        "input", "transition", "plain" or "residual".
    """
    block = model.blocks[index]
    if index in getattr(model, "transitions", ()):
        return "transition"
    if type(block).__name__ in ("Transition", "Transition1d"):
        return "transition"
    if type(model).__name__ == "FCNet" and index == 0:
        return "input"
    shortcut = getattr(block, "shortcut", None)
    if shortcut is not None and not isinstance(shortcut, nn.Identity):
        return "transition"
    convs = [m for m in block.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if convs and (any(s != 1 for c in convs for s in c.stride) or convs[0].in_channels != convs[-1].out_channels):
        return "transition"
    connects = _connects(block)
    if connects and all(getattr(c, "name", None) == "none" for c in connects):
        return "plain"
    return "residual"


def block_roles(model: nn.Module, prefix: str = "blocks") -> dict[str, str]:
    """{qualified block name: role} for every entry of `model.blocks`, in forward order.

    Args:
        model: a zoo model.
        prefix: the name of its block list.

    Returns:
        The roles ({} without `blocks`).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return {}
    return {f"{prefix}.{i}": block_role(model, i) for i in range(len(blocks))}
