"""Tiny HF transformers models built from configs (no downloads), in float64, for the objective tests."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

D = torch.float64
VOCAB = 11


def gpt2(seed: int = 0):
    """A 1-layer GPT-2 (tied input/output embeddings, default SDPA attention) in eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=VOCAB, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).to(D).eval()


def bert(head: str, seed: int = 0, **extra):
    """A 1-layer BERT with the given head class name (e.g. "BertForMaskedLM"), in eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                                  vocab_size=VOCAB, max_position_embeddings=16, **extra)
    return getattr(transformers, head)(cfg).to(D).eval()


def token_batches(seed: int = 0, lengths=((3, 6), (2, 4))):
    """HF-style dict batches of different shapes, with right padding marked in attention_mask."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, t in lengths:
        ids = torch.randint(1, VOCAB, (b, t), generator=g)
        mask = torch.ones(b, t, dtype=torch.long)
        mask[0, -2:] = 0          # the first row is padded at its end
        ids[0, -2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
