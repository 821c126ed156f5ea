"""Attention kernels and derivatives: which scaled-dot-product-attention kernel a derivative can go through.

PyTorch's fused SDPA kernels (flash, memory-efficient; the default on CPU for `nn.MultiheadAttention`,
`nn.TransformerEncoder` and HF models with `attn_implementation="sdpa"`) have a first derivative but no
double backward and no forward-mode AD. The math kernel (`sdpa_kernel(SDPBackend.MATH)`) computes the same
attention with plain matmuls and softmax, equal to the fused result to rounding and differentiable any number
of times. Exact second-order products fall back to it; first-order products (finite differences) keep the
fused kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

_ATTENTION_WORDS = ("scaled_dot_product", "attention")


def is_attention_error(messages: Sequence[str]) -> bool:
    """Does any failure message come from a fused attention kernel without higher derivatives?

    Args:
        messages: the first lines of the errors a derivative raised.

    Returns:
        True when a message names attention (the fallback to the math kernel may help).
    """
    return any(word in m.lower() for m in messages for word in _ATTENTION_WORDS)


def math_attention(enabled: bool = True) -> AbstractContextManager:
    """`sdpa_kernel(SDPBackend.MATH)` when enabled (the kernel every derivative exists for), else a no-op.

    Args:
        enabled: whether to restrict attention to the math kernel.

    Returns:
        A context manager.
    """
    if not enabled:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
