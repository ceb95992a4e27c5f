"""DiMamba backbone: the DiT with each attention layer replaced by a bidirectional Mamba mixer.

Same contract as the DiT (models/dit.py): token ids x_t (B, T) with masked positions at
`mask_id` and the noise level (B,) in, logits (B, T, vocab_size + 1) out, or with `at` only the
marked positions' logits over the real vocabulary. Objectives, evaluation and sampling call it
exactly as they call the DiT; only the dual cache (sampling/block_cache.py), which keeps
attention keys and values, has nothing to keep here and is refused.

A block is the DiT's block with the mixer swapped: adaLN-Zero modulation from the time
embedding, then the mixer, then the same MLP:

    x = x + gate1 * BiMamba(modulate(norm(x), shift1, scale1))
    x = x + gate2 * MLP(modulate(norm(x), shift2, scale2))

BiMamba (as in Vision Mamba and Caduceus): one input projection gives the sequence u and a gate
z; a causal Mamba SSM reads u left to right, a second one (its own convolution and SSM
weights) reads it right to left, and their sum, gated by silu(z), is projected back:

    y = out_proj((SSM_fwd(u) + flip(SSM_bwd(flip(u)))) * silu(z))

so every position sees the whole sequence, as under bidirectional attention. Positions need no
rotary embedding: the recurrence and the causal convolution order them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from atat_cli.errors import AtatError
from atat_cli.models.layers import MLP, FinalLayer, TimeEmbedding, modulate
from atat_cli.models.selective_scan import selective_scan


class SelectiveSSM(nn.Module):
    """One direction of Mamba (Gu & Dao 2023, Mamba-1): depthwise causal convolution, SiLU, then
    the selective scan with token-dependent step size delta and projections B, C."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int, dt_min: float = 1e-3,
                 dt_max: float = 0.1, compile_scan: bool = False):
        super().__init__()
        self.d_state = d_state
        self.compile_scan = compile_scan  # the PyTorch scan's chunk step through torch.compile
        self.dt_rank = dt_rank  # delta = softplus(dt_proj(x_proj(u))) is low rank, as in Mamba
        # Causal: pad d_conv - 1 on both sides and keep the first T outputs, so position t sees t - d_conv + 1 .. t.
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        # Mamba's initialisation: delta = softplus(dt_proj(.)) starts log-uniform in [dt_min, dt_max]
        # (the bias is softplus's inverse of it): with |A| in [1, d_state], channels start with
        # memories 1 / (delta |A|) from about one position to a thousand.
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) < 0 keeps the recurrence stable; S4D-real init A[:, n] = -(n + 1).
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(d_inner, 1))  # (Di, N)
        self.D = nn.Parameter(torch.ones(d_inner))  # skip connection u -> y

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, T, Di) -> y (B, T, Di), causal: y_t depends on u_1..u_t only."""
        T = u.shape[1]
        u = F.silu(self.conv(u.transpose(1, 2))[..., :T].transpose(1, 2))  # (B, T, Di)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt).float())  # (B, T, Di) step sizes > 0
        return selective_scan(u, delta, -torch.exp(self.A_log.float()), B, C, self.D, compiled=self.compile_scan)


class BiMamba(nn.Module):
    """The bidirectional mixer: a forward and a backward SSM on one shared input projection."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, compile_scan: bool = False):
        super().__init__()
        d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)  # Mamba's widths
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)  # u and the gate z
        self.forward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank, compile_scan=compile_scan)
        self.backward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank, compile_scan=compile_scan)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, Di) each
        y = self.forward_ssm(u) + self.backward_ssm(u.flip(1)).flip(1)  # (B, T, Di): left and right context
        return self.out_proj(y * F.silu(z))


class DiMambaBlock(nn.Module):
    """The DiT block (models/layers.py, Block) with BiMamba in place of attention."""

    def __init__(self, d_model, mlp_ratio, dropout, cond_dim, d_state, d_conv, expand, compile_scan=False):
        super().__init__()
        # Under adaLN the affine part comes from the time embedding, so the norms carry none.
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mixer = BiMamba(d_model, d_state, d_conv, expand, compile_scan)
        self.mlp = MLP(d_model, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)
        self.adaLN = nn.Linear(cond_dim, 6 * d_model)
        nn.init.zeros_(self.adaLN.weight)  # zero init: every block starts as the identity (adaLN-Zero)
        nn.init.zeros_(self.adaLN.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # one (shift, scale, gate) per sequence for each half of the block: (B, 1, D) each
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(cond)[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.drop(self.mixer(modulate(self.norm1(x), shift1, scale1)))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiMamba(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        """cfg: ModelConfig (d_state, d_conv, expand size the mixer; n_heads is unused); vocab_size:
        the tokenizer's vocabulary (the mask id is appended)."""
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, cfg.d_model)
        self.time = TimeEmbedding(cfg.cond_dim)
        self.blocks = nn.ModuleList(
            DiMambaBlock(cfg.d_model, cfg.mlp_ratio, cfg.dropout, cfg.cond_dim, cfg.d_state, cfg.d_conv, cfg.expand,
                         cfg.compile_scan)
            for _ in range(cfg.n_layers)
        )
        self.final = FinalLayer(cfg.d_model, vocab_size + 1, cfg.cond_dim)

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor, at: torch.Tensor | None = None,
                kv_caches: list[dict] | None = None, start: int | None = None) -> torch.Tensor:
        """Logits (B, T, V + 1), or with `at` (B, T) bool the marked positions' logits (N, V), as
        the DiT's. `kv_caches` and `start` exist for the DiT's signature and are refused."""
        if kv_caches is not None or start is not None:
            raise AtatError("the DiMamba backbone has no cached decoding: a scan keeps no per-position "
                            "keys and values to reuse", "use --cache none")
        x = self.embed(x_t)  # (B, T, D)
        cond = F.silu(self.time(noise_level))  # (B, cond_dim)
        for block in self.blocks:
            x = block(x, cond)
        if at is None:
            return self.final(x, cond)
        return self.final(x, cond, at=at, n_out=self.vocab_size)
