"""How good is an importance estimator? Rank correlation with the difficulty it should predict."""

from __future__ import annotations

import torch


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 (ties broken by order; the values compared here are continuous)."""
    r = torch.empty_like(x, dtype=torch.float64)
    r[x.argsort()] = torch.arange(len(x), dtype=torch.float64, device=x.device)
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors: Pearson's correlation of their ranks."""
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a.flatten()), ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
