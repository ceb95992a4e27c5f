"""Which masked positions enter the loss: sampled in proportion to predicted loss, reweighted.

Given an estimator's predicted loss s_i at each masked position (computed from x_t only), keep
position i with probability

    q_i = min(1, keep * ((1 - floor) * s_i / mean_masked(s) + floor))

and weight its term by 1 / q_i. Conditional on x_t, E[sum_kept term_i / q_i] = sum_masked term_i
for any q > 0, so the loss stays an unbiased estimate of the NELBO while the head and the
cross-entropy run on about `keep` of the masked rows; rows that matter most are the ones kept.
`floor` > 0 bounds each weight by 1 / (keep * floor).
"""

from __future__ import annotations

import torch


def keep_probabilities(predicted: torch.Tensor, masked: torch.Tensor, keep: float, floor: float) -> torch.Tensor:
    """predicted (B, T) >= 0 (detached), masked (B, T) bool -> q (B, T) in (0, 1]."""
    s = predicted.float()
    mean = (s * masked).sum() / masked.sum().clamp(min=1)
    relative = s / mean.clamp(min=1e-12)
    return (keep * ((1 - floor) * relative + floor)).clamp(max=1.0)


def sample_kept(predicted, masked, keep: float, floor: float, generator: torch.Generator):
    """(kept (B, T) bool, a subset of masked; q (B, T)): the positions whose terms enter the loss."""
    q = keep_probabilities(predicted, masked, keep, floor)
    draw = torch.rand(masked.shape, generator=generator, device=masked.device)
    return masked & (draw < q), q
