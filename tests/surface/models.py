"""Small float64 models for the surface tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

D = torch.float64


def mlp(d_in: int = 5, width: int = 7, n_out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, n_out)).to(D).eval()


class ConvBN(nn.Module):
    """conv → BatchNorm (non-trivial running statistics) → tanh → conv → BatchNorm → pool → linear."""

    def __init__(self, c_in: int = 2, n_out: int = 3):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, n_out)
        with torch.no_grad():
            for bn in (self.bn, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.bn(self.c1(x)))
        return self.head(torch.tanh(self.bn2(self.c2(h))).mean((2, 3)))


def conv_bn() -> nn.Module:
    torch.manual_seed(1)
    return ConvBN().to(D).eval()


def classification(n: int = 40, d_in: int = 5, n_out: int = 3, seed: int = 0, image: bool = False):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2, 6, 6) if image else (n, d_in)
    return torch.randn(shape, generator=g, dtype=D), torch.randint(0, n_out, (n,), generator=g)


class Quadratic(nn.Module):
    """Every sample's output is ½ θᵀAθ (A symmetric, fixed buffer): the loss surface is a quadratic form."""

    def __init__(self, A: Tensor, theta: Tensor):
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: Tensor) -> Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_output(out: Tensor, _y: Tensor) -> Tensor:
    return out.mean()
