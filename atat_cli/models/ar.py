"""Autoregressive baseline: the DiT's blocks with causal attention and no time conditioning.

Same width, depth and heads as the DiT of the same size preset, so diffusion and
autoregression are compared at equal size. Logits at position i predict token i + 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from atat_cli.models.layers import Block, FinalLayer, Rotary


class ARModel(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.seq_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, causal=True, kernel=cfg.attention)
            for _ in range(cfg.n_layers)
        )
        self.final = FinalLayer(cfg.d_model, vocab_size)

    def forward(self, x: torch.Tensor, kv_caches: list[dict] | None = None) -> torch.Tensor:
        """x: (B, T) ids. With kv_caches (one dict per block) the call continues a cached prefix."""
        h = self.embed(x)
        for i, block in enumerate(self.blocks):
            h = block(h, self.rotary, kv_cache=None if kv_caches is None else kv_caches[i])
        return self.final(h)
