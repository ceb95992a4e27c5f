"""The forward (noising) process: sample times, then mask tokens independently."""

from __future__ import annotations

import torch


def sample_times(n: int, eps: float, antithetic: bool, generator: torch.Generator, device) -> torch.Tensor:
    """t = (1 - eps) u + eps. Antithetic (MDLM's low-discrepancy sampler): one uniform draw in each
    of n equal strata of [0, 1), so a batch always covers all noise levels and the loss variance drops."""
    u = torch.rand(n, generator=generator, device=device)
    if antithetic:
        u = (u / n + torch.arange(n, device=device) / n) % 1.0
    return time_of(u, eps)


def time_of(u: torch.Tensor, eps: float) -> torch.Tensor:
    """Map u in [0, 1) onto t in [eps, 1): t = (1 - eps) u + eps, so t never reaches 0 (w(t) = 1/t)."""
    return (1.0 - eps) * u + eps


def mask_tokens(x0: torch.Tensor, mask_prob: torch.Tensor, mask_id: int, generator: torch.Generator):
    """Replace each token by mask_id with probability mask_prob (broadcast to x0's shape).

    Returns (x_t, masked) where masked is the boolean mask indicator."""
    draw = torch.rand(x0.shape, generator=generator, device=x0.device)
    masked = draw < mask_prob
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked
