"""A per-position masking schedule: each position is masked inside its own window of the base rate.

Position i of a block of L is masked with probability

    m_i(r) = clip((r - a_i) / d, 0, 1),    a_i = (1 - d) * (1 - i / (L - 1)),

where r = r(t) is the base schedule's masking rate and d in (0, 1] the window: as r rises from 0
to 1 the masking sweeps from the right end of the block to the left, each position going from
clean to masked while r crosses [a_i, a_i + d], so the reverse process reveals the block from
the left. d = 1 is MDLM (every a_i = 0); as d -> 0 the order becomes strictly left to right and
the bound tends to a left-to-right (autoregressive) factorisation of the same denoiser. In
between it is a soft semi-autoregressive order.

The masking does not depend on x0, and the reverse model knows each position, so the NELBO stays
MDLM's with each position's own rate: position i's reverse unmasking rate is m_i'(t) / m_i(t),
which is r'(t) / (d m_i) inside the window and 0 outside (a position that is surely masked or
surely clean has no transition to account for). With w(t) = r'(t) / r(t) the base weight,

    NELBO = E_t  sum_{i masked, 0 < m_i < 1}  w(t) r(t) / (d m_i) * (-log mu_i(x0_i))

per block. Every mask pattern is still drawn independently of x0, so the best denoiser is the
same conditional p(x0_i | the unmasked tokens) as under MDLM: the schedule only decides which
patterns the model is trained and scored on. The bound is an upper bound on the NLL of the
reverse process that follows the schedule (ancestral sampling does), so it compares with MDLM's
uniform NELBO; the uniform NELBO of the same model is reported beside it.

A position that is masked with probability 1 carries no term, so the head skips it (`scored`).
Like MDLM's, the integral starts at eps: a position whose window starts at 0 is masked with
probability up to r(eps) / d at the smallest time, which the bound leaves out as MDLM leaves out
r(eps); only the positions with a_i < r(eps) are affected (the last of a block while
L - 1 <= (1 - d) / r(eps), e.g. L <= 750 at d = 0.25 and eps = 1e-3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PositionSchedule(nn.Module):
    """Offsets a_i and the window d as buffers, saved with the model so that evaluation and sampling
    follow the schedule the run was trained with."""

    by_position = True
    learned = False

    def __init__(self, seq_len: int, window: float):
        super().__init__()
        self.register_buffer("offsets", (1.0 - window) * (1.0 - torch.arange(seq_len) / max(seq_len - 1, 1)))
        self.register_buffer("window", torch.tensor(float(window)))

    def rate_at(self, rate: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, length) masking probability of each position at base rate (B,)."""
        offsets = self.offsets[: length or self.offsets.shape[0]]
        return ((rate.float()[:, None] - offsets) / self.window).clamp(0.0, 1.0)

    def mask_prob(self, rate: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(B, T) probability that each position is masked at base rate (B,); x0 gives the shape only."""
        return self.rate_at(rate, x0.shape[1])

    def scored(self, masked: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """The masked positions that carry a bound term: those not masked with certainty."""
        return masked & (mask_prob < 1)

    def row_weights(self, at: torch.Tensor, rate: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
        """(N,) the weight w(t) r(t) / (d m_i) of each row at the positions `at` (B, T)."""
        sequence = at.nonzero(as_tuple=True)[0]
        m = self.rate_at(rate, at.shape[1])[at]  # > 0 wherever a position is masked
        return loss_weight[sequence] * rate[sequence] / (self.window * m)

    def bound_terms(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
        """(nll, terms), both (N,), for rows at masked positions: the per-row weight times -log mu_x."""
        nll = F.cross_entropy(logits.float(), target, reduction="none")
        return nll, weight * nll
