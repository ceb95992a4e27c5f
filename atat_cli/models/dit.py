"""DiT backbone for masked diffusion, as in MDLM: bidirectional attention, adaLN time conditioning.

Input: token ids x_t (B, T) where masked positions hold `mask_id`, and the noise level (B,)
(the masking rate 1 - alpha(t), which means the same thing under every schedule). Output:
logits (B, T, vocab_size + 1) over the real vocabulary plus the mask id; the SUBS
parameterisation (diffusion/subs.py) decides what to do with them. Training and evaluation ask
for the masked positions only (`at=masked`), which skips the head everywhere else.

model.time_input and model.norm_weight (off by default) let it hold MDLM's released weights
exactly; runs/import_mdlm.py maps them and lists the differences.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from atat_cli.models.layers import Block, FinalLayer, Rotary, TimeEmbedding


class DiT(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        """cfg: ModelConfig; vocab_size: the tokenizer's vocabulary (the mask id is appended)."""
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, cfg.d_model)
        self.time = TimeEmbedding(cfg.cond_dim, input=cfg.time_input)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.seq_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, causal=False,
                  cond_dim=cfg.cond_dim, kernel=cfg.attention, norm_weight=cfg.norm_weight)
            for _ in range(cfg.n_layers)
        )
        self.final = FinalLayer(cfg.d_model, vocab_size + 1, cfg.cond_dim, norm_weight=cfg.norm_weight)

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor, at: torch.Tensor | None = None,
                kv_caches: list[dict] | None = None, start: int | None = None) -> torch.Tensor:
        """Logits (B, T, V + 1); with `at` (B, T) bool, only the marked positions' logits over the
        real vocabulary, (N, V) in row-major order: all the NELBO needs, since under SUBS unmasked
        positions carry over and the mask id has probability zero.

        Sampling with a dual cache (sampling/block_cache.py): `kv_caches` (one empty dict per
        block) is filled with every layer's keys and values of x_t; a later call with `start`
        passes only the tokens of positions [start, start + T) and computes those positions
        alone, attending to the cached keys and values of all the others."""
        x = self.embed(x_t)  # (B, T, D)
        cond = F.silu(self.time(noise_level))  # (B, cond_dim)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rotary, cond, None if kv_caches is None else kv_caches[i], start)
        if at is None:
            return self.final(x, cond)
        return self.final(x, cond, at=at, n_out=self.vocab_size)
