"""ATAT's importance estimator: a small time-conditioned transformer scoring each position.

    s = sigmoid(head(blocks(embed(x), t)) + b_pos)    in [0, 1] per position

x may contain the mask id. `input` says what it is trained on: `x_t` (valid designs: it sees
only the noisy sequence, as the sampler does, and predicts each masked position's loss) or `x0`
(the seeds' design: it scores the clean text). The head starts at zero so every score starts at
0.5. b_pos is a learned per-position bias, used only by the seeds' `position` masking strategy.

`ATATModel` bundles the DiT with the estimator and a per-token masking schedule (either may be
absent) into one module, so the trainer's optimiser, EMA, checkpoints and DDP handle them all
without knowing about ATAT.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from atat_cli.models.layers import Block, FinalLayer, Rotary, TimeEmbedding


class ImportanceEstimator(nn.Module):
    def __init__(self, cfg, vocab_size: int, seq_len: int, position_bias: bool = False):
        """cfg: ImportanceConfig (n_layers, d_model, n_heads, input); vocab_size excludes the mask id."""
        super().__init__()
        self.input = cfg.input
        cond_dim = cfg.d_model // 2
        self.embed = nn.Embedding(vocab_size + 1, cfg.d_model)
        self.time = TimeEmbedding(cond_dim)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, seq_len)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, 4.0, 0.0, causal=False, cond_dim=cond_dim) for _ in range(cfg.n_layers)
        )
        self.head = FinalLayer(cfg.d_model, 1, cond_dim)
        self.position_bias = nn.Parameter(torch.zeros(seq_len)) if position_bias else None

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        cond = F.silu(self.time(noise_level))
        for block in self.blocks:
            h = block(h, self.rotary, cond)
        score = self.head(h, cond)[..., 0].float()
        if self.position_bias is not None:
            score = score + self.position_bias[: x.shape[1]]
        return torch.sigmoid(score)


class ATATModel(nn.Module):
    """The DiT plus ATAT's parts (estimator, per-token schedule; None when off); calling it is
    calling the DiT."""

    def __init__(self, denoiser: nn.Module, estimator: ImportanceEstimator | None, token_schedule: nn.Module | None):
        super().__init__()
        self.denoiser = denoiser
        self.estimator = estimator
        self.token_schedule = token_schedule
        self.vocab_size = denoiser.vocab_size
        self.mask_id = denoiser.mask_id

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor, at: torch.Tensor | None = None,
                **cached) -> torch.Tensor:
        return self.denoiser(x_t, noise_level, at, **cached)
