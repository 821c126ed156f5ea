"""Pre-LN ViT of docs/methods.md §B.2 (Oh et al. 2025, `ortho_models.OrthoBlock` + `base.Classifier`).

    tokens = Conv2d(in, d, p, stride p)(img) + pos (randn·0.02, patch tokens only); CLS (zeros) prepended
    block:   a = attn(LN₁(x));  x = connect_attn(x, a)        LN: LayerNorm(d, no affine, eps 1e-6)
             m = mlp(LN₂(x));   x = connect_mlp(x, m)         attn: qkv bias; mlp: d → 4d → d, GELU(tanh)
    head:    LayerNorm(d) (affine) → Linear, on the CLS token

Presets: tiny (d 16, depth 2, heads 2; tests), s (384/6/6; depth 6 as in the paper), b (768/12/12).
Linear/conv layers keep PyTorch's default init, as the reference does. Attention is explicit
softmax(q kᵀ/√d_h) v by default (`attn_impl="math"`), which supports float64 gradcheck and
torch.func forward-over-reverse; `attn_impl="sdpa"` uses F.scaled_dot_product_attention (faster
training, but on CPU torch 2.13 has no forward-mode AD for it, so jvp-of-grad HVPs fail).
No dropout or drop-path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect, modes_per_block

PRESETS = {"tiny": (16, 2, 2), "s": (384, 6, 6), "b": (768, 12, 12)}


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias) and an output projection."""

    def __init__(self, dim: int, heads: int, impl: str = "math"):
        super().__init__()
        self.heads, self.impl = heads, impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Multi-head self-attention softmax(QKᵀ/√d_h) V, through SDPA or explicitly.

        Args:
            x: [B, T, d] tokens.

        Returns:
            [B, T, d].
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.impl == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax((q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1), dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """fc2(GELU_tanh(fc1(x)))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """fc2(GELU(fc1(x))).

        Args:
            x: [B, T, d] tokens.

        Returns:
            [B, T, d].
        """
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class ViTBlock(nn.Module):
    """Pre-LN block with its own Connect for the attention and the MLP update.

    `prenorm=False` drops the two pre-LNs (norm1/norm2 become identities): the sublayers see the raw
    stream, so any normalization comes from the Connect (post-LN `scaled_ln:1`, Liu et al.'s variants).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, attn_mode, mlp_mode, attn_impl: str = "math",
                 prenorm: bool = True):
        super().__init__()
        norm = (lambda: nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)) if prenorm else nn.Identity
        self.norm1 = norm()
        self.attn = Attention(dim, heads, attn_impl)
        self.connect_attn = Connect(attn_mode, dim, "tokens")
        self.norm2 = norm()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.connect_mlp = Connect(mlp_mode, dim, "tokens")

    def forward(self, x: Tensor) -> Tensor:
        """Pre-norm block: x ← connect(x, attn(norm1 x)); x ← connect(x, mlp(norm2 x)).

        Args:
            x: [B, T, d] tokens.

        Returns:
            [B, T, d].
        """
        x = self.connect_attn(x, self.attn(self.norm1(x)))
        return self.connect_mlp(x, self.mlp(self.norm2(x)))


def mode_pairs(connect, depth: int, name: str = "vit") -> list[tuple]:
    """One (attn, mlp) mode pair per block from one mode, or one entry per block (a mode or [attn, mlp]).

    Args:
        connect: a mode, or one entry per block.
        depth: the number of blocks.
        name: the model's name, for messages.

    Returns:
        [(attn mode, mlp mode)] per block.
    """
    pairs = []
    for m in modes_per_block(connect, depth, "block"):
        if isinstance(m, (list, tuple)):
            if len(m) != 2:
                raise LandscapeError(f"{name}: a block's connect entry is a mode or [attn, mlp], got {m!r}")
            pairs.append(tuple(m))
        else:
            pairs.append((m, m))
    return pairs


class ViT(nn.Module):
    """Pre-LN ViT classifier. `connect`: one mode, or one entry per block, each a mode or [attn, mlp]."""

    def __init__(
        self,
        *,
        preset: str = "s",
        dim: int | None = None,
        depth: int | None = None,
        heads: int | None = None,
        mlp_ratio: float = 4.0,
        img_size: int = 32,
        patch: int = 4,
        in_channels: int = 3,
        n_classes: int = 10,
        connect: str | list = "identity",
        attn_impl: str = "math",
    ):
        super().__init__()
        if preset not in PRESETS:
            raise LandscapeError(f"vit: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        if attn_impl not in ("math", "sdpa"):
            raise LandscapeError(f"vit: attn_impl must be 'math' or 'sdpa', got {attn_impl!r}")
        p_dim, p_depth, p_heads = PRESETS[preset]
        dim, depth, heads = dim or p_dim, depth or p_depth, heads or p_heads
        if dim % heads:
            raise LandscapeError(f"vit: dim {dim} is not divisible by heads {heads}")
        if img_size % patch:
            raise LandscapeError(f"vit: img_size {img_size} is not divisible by patch {patch}")
        n_patches = (img_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pairs = mode_pairs(connect, depth)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio, a, m, attn_impl) for a, m in pairs)
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, img: Tensor) -> Tensor:
        """Args:
            img: [B, C, H, W] images.

        Returns:
            [B, classes] logits from the CLS token.
        """
        x = self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_embed
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_norm(x[:, 0]))
