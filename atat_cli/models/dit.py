"""DiT backbone for masked diffusion, as in MDLM: bidirectional attention, adaLN time conditioning.

Input: token ids x_t (B, T) where masked positions hold `mask_id`, and the noise level (B,)
(the masking rate 1 - alpha(t), which means the same thing under every schedule). Output:
logits (B, T, vocab_size + 1) over the real vocabulary plus the mask id; the SUBS
parameterisation (diffusion/subs.py) decides what to do with them. Training and evaluation ask
for the masked positions only (`at=masked`), which skips the head everywhere else.

With model.block_size = b > 0 it is BD3-LM's block-causal denoiser (Arriola et al. 2025): the
sequence is cut into blocks of b positions, and position i of block k sees the noisy tokens of
block k and the *clean* tokens of blocks before k, nothing after. One pass scores every block:
the input is two copies, x_t then the clean x0, under one attention mask (`block_causal_mask`);
the clean copy attends block-causally to itself at noise level 0 (clean tokens are clean at every
t, so its keys and values can be cached when sampling: sampling/block_cache.py), and only the
noisy copy reaches the head. Its
NELBO is the bound of decoding block by block, left to right, each block by masked diffusion
given the finished ones, which is BD3-LM's; b = T is MDLM's (the clean copy is never seen).

model.time_input and model.norm_weight (off by default) let it hold MDLM's released weights
exactly; runs/import_mdlm.py maps them and lists the differences.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from atat_cli.models.layers import Block, FinalLayer, Rotary, TimeEmbedding


def block_causal_mask(T: int, block_size: int, device=None) -> torch.Tensor:
    """(2T, 2T) bool, True where a query may attend to a key, for the input [x_t, x0] of T
    positions each: noisy to noisy within its own block, noisy to clean in the blocks before it,
    clean to clean in its own block and before (never clean to noisy)."""
    block = torch.arange(T, device=device) // block_size
    same, before = block[:, None] == block[None], block[:, None] > block[None]
    noisy = torch.cat([same, before], dim=1)
    clean = torch.cat([torch.zeros_like(same), same | before], dim=1)
    return torch.cat([noisy, clean], dim=0)


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
        self.block_size = cfg.block_size  # 0: bidirectional (MDLM)

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor, at: torch.Tensor | None = None,
                kv_caches: list[dict] | None = None, start: int | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V + 1); with `at` (B, T) bool, only the marked positions' logits over the
        real vocabulary, (N, V) in row-major order: all the NELBO needs, since under SUBS unmasked
        positions carry over and the mask id has probability zero.

        Sampling with a dual cache (sampling/block_cache.py): `kv_caches` (one empty dict per
        block) is filled with every layer's keys and values of x_t; a later call with `start`
        passes only the tokens of positions [start, start + T) and computes those positions
        alone, attending to the cached keys and values of all the others.

        Block-causal (block_size > 0): `context` (B, T) is the clean sequence whose earlier blocks
        each block sees: x0 in training and evaluation; by default x_t itself, which is right
        when sampling block by block, since the finished blocks of x_t are clean. With
        `kv_caches` it runs x_t alone, appending its keys and values to the caches and attending
        to everything in them: the clean blocks before a block (at noise level 0), then the
        block itself (sampling/block_cache.py, PrefixCacheDenoiser)."""
        T = x_t.shape[1]
        mask = None
        if self.block_size and kv_caches is None:
            x_t = torch.cat([x_t, x_t if context is None else context], dim=1)
            mask = block_causal_mask(T, self.block_size, x_t.device)
            noise_level = torch.stack([noise_level, torch.zeros_like(noise_level)], dim=1)  # (B, 2): noisy, clean
        x = self.embed(x_t)  # (B, T, D), or (B, 2T, D) for the two copies
        cond = F.silu(self.time(noise_level.flatten())).view(*noise_level.shape, -1)  # (B, [2,] cond_dim)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rotary, cond, None if kv_caches is None else kv_caches[i], start, mask)
        if mask is not None:  # the noisy copy, its conditioning
            x, cond = x[:, :T], cond[:, 0]
        if at is None:
            return self.final(x, cond)
        return self.final(x, cond, at=at, n_out=self.vocab_size)
