"""Tiny float64 models and data for the curvature tests (each has a few hundred parameters at most)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

D = torch.float64


def mlp(d_in: int = 5, width: int = 7, n_out: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.Softplus(), nn.Linear(width, n_out)
    ).to(D)


class ConvBN(nn.Module):
    """conv → BatchNorm (eval, non-trivial running statistics) → tanh → conv → pool → linear."""

    def __init__(self, c_in: int = 2, n_out: int = 3):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, n_out)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.bn(self.c1(x)))
        return self.head(torch.tanh(self.c2(h)).mean((2, 3)))


class Residual(nn.Module):
    """x ← x + W₂ tanh(W₁ x) twice, then a linear head."""

    def __init__(self, d_in: int = 5, width: int = 6, n_out: int = 3):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width)) for _ in range(2)
        )
        self.head = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(x)
        return self.head(x)


class Orthogonal(nn.Module):
    """Orthogonal-update blocks: x ← x + f − (⟨x, f⟩ / (‖x‖² + eps)) x with f = W₂ tanh(W₁ x)."""

    def __init__(self, d_in: int = 5, width: int = 6, n_out: int = 3, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width)) for _ in range(2)
        )
        self.head = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for b in self.blocks:
            f = b(x)
            coef = (x * f).sum(-1, keepdim=True) / ((x * x).sum(-1, keepdim=True) + self.eps)
            x = x + f - coef * x
        return self.head(x)


class _Cube(torch.autograd.Function):
    """x³ with a backward but no jvp: forward-mode AD (torch.func.jvp) cannot pass through it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g


class NoForwardAD(nn.Module):
    """linear → x³ (no forward-mode AD) → linear: only the double-backward paths can differentiate it twice."""

    def __init__(self, d_in: int = 5, width: int = 4, n_out: int = 3):
        super().__init__()
        self.a, self.b = nn.Linear(d_in, width), nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(_Cube.apply(self.a(x)))


class Attention(nn.Module):
    """Tokens → one softmax self-attention layer (written out) + residual → mean pool → linear."""

    def __init__(self, d_tok: int = 3, dim: int = 4, n_out: int = 3):
        super().__init__()
        self.embed = nn.Linear(d_tok, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        h = self.norm(h + self.proj(a @ v))
        return self.head(h.mean(1))


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name → (model in eval mode, float64, input shape per sample)."""
    torch.manual_seed(0)
    return {
        "mlp": (mlp().eval(), (5,)),
        "convbn": (ConvBN().to(D).eval(), (2, 5, 5)),
        "residual": (Residual().to(D).eval(), (5,)),
        "orthogonal": (Orthogonal().to(D).eval(), (5,)),
        "attention": (Attention().to(D).eval(), (4, 3)),
    }


def data(shape: tuple[int, ...], n: int = 12, n_out: int = 3, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=D), torch.randint(0, n_out, (n,), generator=g)


loss = F.cross_entropy


class Dense:
    """A plain operator object (dim, dtype, device, matmat; no base class) around a dense symmetric matrix,
    counting its matmat calls: the reference every solver test measures against."""

    def __init__(self, A: Tensor):
        self.A, self.dim, self.dtype, self.device = A, A.shape[0], A.dtype, A.device
        self.calls = 0

    def matmat(self, V: Tensor) -> Tensor:
        self.calls += 1
        return self.A @ V


def dense_with_eigenvalues(eigs, seed: int = 0) -> Dense:
    """Q diag(eigs) Qᵀ in float64 with Q Haar-random (QR of a seeded Gaussian matrix)."""
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(seed)))
    return Dense(Q @ torch.diag(torch.as_tensor(eigs, dtype=D)) @ Q.T)


class Dropping(nn.Module):
    """A linear model behind functional dropout that is always on: a random model, whatever its mode."""

    def __init__(self, d_in: int = 5, n_out: int = 3):
        super().__init__()
        self.lin = nn.Linear(d_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(F.dropout(x, 0.5, training=True))
