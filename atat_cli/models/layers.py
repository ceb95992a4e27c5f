"""Building blocks shared by the DiT, the AR baseline and the importance estimator.

A block is pre-norm attention + MLP. With a conditioning vector (the diffusion time) the norms
are modulated by adaLN (shift, scale, gate), as in DiT/MDLM; without one they are plain
LayerNorms, which is the AR baseline. Rotary position embeddings on queries and keys.

Two switches exist for models imported from MDLM (runs/import_mdlm.py), off by default:
`norm_weight` gives the adaLN-modulated norms a learnable weight without a bias (MDLM's own
LayerNorm), and TimeEmbedding's `input` says what it embeds (MDLM's total noise sigma, or
nothing when MDLM was trained without time conditioning).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional, never required: used on CUDA in half precision when installed
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer): rotates pairs of channels by position-dependent angles."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (T, Dh/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0, copies: int = 1) -> torch.Tensor:
        """x: (B, T, H, Dh); rotate (x1, x2) halves, computed in fp32 for accuracy. With `copies`,
        x holds that many copies of the same T / copies positions one after the other (the
        block-causal DiT's noisy and clean sequence), and each copy gets the same angles."""
        T = x.shape[1] // copies
        cos, sin = self.cos[offset : offset + T], self.sin[offset : offset + T]
        if copies > 1:
            cos, sin = cos.repeat(copies, 1), sin.repeat(copies, 1)
        cos, sin = cos[:, None, :], sin[:, None, :]
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, causal: bool, kernel: str = "auto"):
        super().__init__()
        self.n_heads = n_heads
        self.causal = causal
        self.kernel = kernel
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, rotary: Rotary, kv_cache: dict | None = None,
                start: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """With a kv_cache and no `start`: append x's keys/values to it (AR decoding; an empty
        cache is filled). With `start`: x holds positions [start, start + T) of a cached
        bidirectional sequence; their keys/values replace the cached ones and the queries attend
        to the whole cached sequence (the DiT's dual cache, sampling/block_cache.py). With `mask`
        (T, T) bool, True where a query may attend to a key: x is two copies of one sequence
        (the block-causal DiT's), which share positions."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).unbind(dim=2)
        offset = start if start is not None else 0 if kv_cache is None else kv_cache.get("len", 0)
        copies = 1 if mask is None else 2
        q, k = rotary(q, offset, copies), rotary(k, offset, copies)
        if kv_cache is not None and start is not None:
            kv_cache["k"][:, start : start + T] = k
            kv_cache["v"][:, start : start + T] = v
            k, v = kv_cache["k"], kv_cache["v"]
        elif kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=1)
                v = torch.cat([kv_cache["v"], v], dim=1)
            kv_cache["k"], kv_cache["v"], kv_cache["len"] = k, v, k.shape[1]
        p = self.dropout if self.training else 0.0
        # With a cache and a single query the query attends to everything before it: no mask needed.
        causal = self.causal and (kv_cache is None or T > 1)
        if mask is not None:  # flash-attn takes no arbitrary mask
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                               dropout_p=p).transpose(1, 2)
        elif self._use_flash(q):
            y = flash_attn_func(q, k, v, dropout_p=p, causal=causal)
        else:
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, is_causal=causal
            ).transpose(1, 2)
        return self.proj(y.reshape(B, T, C))

    def _use_flash(self, q: torch.Tensor) -> bool:
        if self.kernel == "sdpa" or flash_attn_func is None:
            return False
        return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: float, dropout: float):
        super().__init__()
        hidden = int(ratio * d_model)
        self.fc = nn.Linear(d_model, hidden)
        self.out = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out(F.gelu(self.fc(x), approximate="tanh")))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, one fused kernel; shift and scale broadcast against x."""
    return torch.addcmul(shift, x, 1 + scale)


def _norm(d_model: int, conditioned: bool, weight: bool) -> nn.LayerNorm:
    """A plain LayerNorm without adaLN (weight and bias); under adaLN none, or with `weight` a
    weight alone (MDLM's LayerNorm: F.layer_norm, then times the weight)."""
    if not conditioned:
        return nn.LayerNorm(d_model)
    return nn.LayerNorm(d_model, elementwise_affine=weight, bias=False)


class Block(nn.Module):
    """Pre-norm transformer block; adaLN-modulated when cond_dim is given (DiT), plain otherwise (AR)."""

    def __init__(self, d_model, n_heads, mlp_ratio, dropout, causal, cond_dim=None, kernel="auto",
                 norm_weight=False):
        super().__init__()
        conditioned = cond_dim is not None
        # Under adaLN the affine part comes from the time embedding, so the norms carry none
        # (norm_weight: a weight and no bias, as MDLM's LayerNorm; only with adaLN).
        self.norm1 = _norm(d_model, conditioned, norm_weight)
        self.norm2 = _norm(d_model, conditioned, norm_weight)
        self.attn = Attention(d_model, n_heads, dropout, causal, kernel)
        self.mlp = MLP(d_model, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)
        self.adaLN = nn.Linear(cond_dim, 6 * d_model) if conditioned else None
        if self.adaLN is not None:  # zero init: every block starts as the identity (DiT's adaLN-Zero)
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)

    def forward(self, x, rotary, cond=None, kv_cache=None, start=None, mask=None):
        """cond: (B, cond_dim), or (B, copies, cond_dim) when x (B, copies * T, D) holds copies of
        one sequence conditioned apart (the block-causal DiT's noisy and clean copy)."""
        if self.adaLN is None:
            x = x + self.drop(self.attn(self.norm1(x), rotary, kv_cache, start, mask))
            return x + self.mlp(self.norm2(x))
        # one (shift, scale, gate) per sequence (or copy) for each half of the block: (B, [copies,] 1, D) each
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(cond).unsqueeze(-2).chunk(6, dim=-1)
        per_copy = shift1.shape[:-2] + (-1, x.shape[-1])  # (B, -1, D), or (B, copies, -1, D)

        def mod(h, shift, scale):
            return modulate(h.view(per_copy), shift, scale).view(x.shape)

        def gated(gate, h):
            return (gate * h.view(per_copy)).view(x.shape)

        x = x + gated(gate1, self.drop(self.attn(mod(self.norm1(x), shift1, scale1), rotary, kv_cache, start, mask)))
        return x + gated(gate2, self.mlp(mod(self.norm2(x), shift2, scale2)))


class FinalLayer(nn.Module):
    """Norm + zero-initialised projection to logits (so training starts from uniform predictions)."""

    def __init__(self, d_model: int, out_dim: int, cond_dim: int | None = None, norm_weight: bool = False):
        super().__init__()
        conditioned = cond_dim is not None
        self.norm = _norm(d_model, conditioned, norm_weight)
        self.linear = nn.Linear(d_model, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN = nn.Linear(cond_dim, 2 * d_model) if conditioned else None
        if self.adaLN is not None:
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)

    def forward(self, x, cond=None, at=None, n_out=None):
        """x (B, T, D) -> (B, T, out_dim). With `at` (B, T) bool: only the positions it marks, as
        rows (N, n_out) in row-major order, and only the first `n_out` outputs (all when None):
        the head is the widest matrix of a small model, so rows nobody reads are not computed."""
        weight, bias = self.linear.weight[:n_out], self.linear.bias[:n_out]  # a prefix of rows: still contiguous
        if at is None:
            h = self.norm(x)
            if self.adaLN is not None:
                shift, scale = self.adaLN(cond)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
                h = modulate(h, shift, scale)
            return F.linear(h, weight, bias)
        h = self.norm(x[at])  # (N, D)
        if self.adaLN is not None:
            sequence = at.nonzero(as_tuple=True)[0]  # (N,) the sequence of each row
            shift, scale = self.adaLN(cond)[sequence].chunk(2, dim=-1)  # (N, D) each
            h = modulate(h, shift, scale)
        return F.linear(h, weight, bias)


# What TimeEmbedding embeds, given the noise level r = 1 - alpha(t) (config.TIME_INPUTS):
#   rate   1000 r: atat's own (the scale lets the frequencies resolve small differences in r)
#   sigma  MDLM's total noise sigma = -log alpha = -log(1 - r), unscaled; r is capped at
#          1 - SIGMA_RATE_CAP, the rate of MDLM's largest sigma (-log 1e-3 = 6.91 at t = 1 with
#          its eps 1e-3), since a sampler may pass r = 1 (every position masked)
#   none   0 whatever r is: MDLM trained with time_conditioning=false, which zeroes sigma
SIGMA_RATE_CAP = 1e-3


class TimeEmbedding(nn.Module):
    """Sinusoidal features of the noise level followed by an MLP (DiT's timestep embedder):
    cos of the n_freq / 2 frequencies max_period^(-i / half), then sin, as GLIDE/DiT/MDLM."""

    def __init__(self, cond_dim: int, n_freq: int = 256, max_period: float = 10000.0, input: str = "rate"):
        super().__init__()
        half = n_freq // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half).float() / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(n_freq, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.input = input

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        level = level.float()  # (B,)
        if self.input == "sigma":
            value = -torch.log1p(-level.clamp(max=1.0 - SIGMA_RATE_CAP))
        elif self.input == "none":
            value = torch.zeros_like(level)
        else:
            value = 1000.0 * level
        args = value[:, None] * self.freqs[None]  # (B, n_freq / 2)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))
