"""A tiny transformer over patches of a 1-D signal (MNIST-1D), for Oh et al. and Liu et al.

docs/methods.md §B.5, §D.4.

The block is the ViT block of `landscape.models.vit` (Oh et al.'s `OrthoBlock` ordering); only the
tokenizer differs:

    tokens = Conv1d(C, d, p, stride p)(signal) + pos (randn·0.02, patch tokens only); CLS (zeros) prepended
    block:   x = connect_attn(x, attn(N₁(x)));  x = connect_mlp(x, mlp(N₂(x)))
    head:    LayerNorm(d) (affine) → Linear, on the CLS token

A [B, L] signal is one channel; L = 40 with patch 5 gives 8 patch tokens + CLS. `prenorm=True`
(default): N = LayerNorm(d, no affine, eps 1e-6), the pre-LN block of Oh et al., with connect modes
`identity` (linear), `ortho_feature` (one projection per token) and `ortho_global` (one per sample
over all tokens and features). `prenorm=False`: N = identity, the sublayers read the raw stream and
the Connect carries the normalization, as in Liu et al.'s formulation y = LN(λx + F(x)):
`scaled:λ` (xSkip, no normalization anywhere in the stream), `scaled_ln:λ` (xSkip+LN; λ = 1 is the
post-LN transformer), `recursive_ln:K` (rSkip+LN), `scaled_bn:λ` / `recursive_bn:K` (the BN ablation:
each feature normalized over batch × tokens). Defaults: d 32, depth 4, heads 4, MLP ratio 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.vit import ViTBlock, mode_pairs


class ViT1D(nn.Module):
    """Transformer classifier over non-overlapping patches of a 1-D signal."""

    def __init__(
        self,
        *,
        dim: int = 32,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        signal_len: int = 40,
        patch: int = 5,
        in_channels: int = 1,
        n_classes: int = 10,
        connect: str | list = "identity",
        prenorm: bool = True,
        attn_impl: str = "math",
    ):
        super().__init__()
        for key, val in (("dim", dim), ("depth", depth), ("heads", heads), ("signal_len", signal_len),
                         ("patch", patch), ("in_channels", in_channels)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise LandscapeError(f"vit1d: {key} must be a positive integer, got {val!r}")
        if dim % heads:
            raise LandscapeError(f"vit1d: dim {dim} is not divisible by heads {heads}")
        if signal_len % patch:
            raise LandscapeError(f"vit1d: signal_len {signal_len} is not divisible by patch {patch}")
        if attn_impl not in ("math", "sdpa"):
            raise LandscapeError(f"vit1d: attn_impl must be 'math' or 'sdpa', got {attn_impl!r}")
        if not isinstance(prenorm, bool):
            raise LandscapeError(f"vit1d: prenorm must be true or false, got {prenorm!r}")
        self.in_channels = in_channels
        self.patch_embed = nn.Conv1d(in_channels, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.randn(1, signal_len // patch, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            ViTBlock(dim, heads, mlp_ratio, a, m, attn_impl, prenorm) for a, m in mode_pairs(connect, depth, "vit1d")
        )
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def tokens(self, x: Tensor) -> Tensor:
        """[B, L] or [B, C, L] → [B, 1 + L/p, d]: CLS then the embedded patches.

        Args:
            x: the signals.

        Returns:
            The tokens.
        """
        if x.dim() == 2:
            x = x.unsqueeze(1)
        t = self.patch_embed(x).transpose(1, 2) + self.pos_embed
        return torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, L] or [B, C, L] signals.

        Returns:
            [B, classes] logits from the CLS token.
        """
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_norm(x[:, 0]))
