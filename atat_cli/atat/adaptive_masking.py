"""Per-position masking probabilities from importance, with the schedule's rate kept exactly.

For a sequence with importance s_i and scheduled masking rate r(t):

    p_i = sigmoid(z_i + c),    z_i = +-(s_i - mean(s)) / temperature

with c chosen per sequence (by bisection) so that mean_i p_i = r(t). Every p_i lies in (0, 1) and
nothing is clamped, so the noise level keeps its meaning: the expected number of masked tokens
is exactly what MDLM's schedule says. temperature -> infinity gives z = 0 and p_i = r (uniform);
temperature -> 0 masks the top r-fraction by importance. `inverse` flips the sign (mask easy
tokens more); `position` uses importance that includes the estimator's learned position bias.
"""

from __future__ import annotations

import torch

BISECTION_STEPS = 40  # the bracket below is at most ~2/temperature + 2 wide: 40 halvings reach ~1e-11


def mask_probabilities(importance: torch.Tensor, rate: torch.Tensor, strategy: str, temperature: float) -> torch.Tensor:
    """importance (B, T) in [0, 1] (detached), rate (B,) -> p (B, T) with p.mean(1) == rate."""
    if strategy == "uniform":
        return rate[:, None].expand_as(importance)
    sign = -1.0 if strategy == "inverse" else 1.0
    s = importance.double()
    z = sign * (s - s.mean(dim=1, keepdim=True)) / temperature
    target = rate.double()[:, None]
    # mean(sigmoid(z + c)) is increasing in c; this bracket holds the root because
    # sigmoid(max z + lo) <= sigmoid(logit(r) - 1) < r and likewise at hi.
    spread = z.abs().amax(dim=1, keepdim=True) + 1.0
    lo, hi = torch.logit(target) - spread, torch.logit(target) + spread
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        too_high = torch.sigmoid(z + mid).mean(dim=1, keepdim=True) > target
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    return torch.sigmoid(z + (lo + hi) / 2).to(importance.dtype)
