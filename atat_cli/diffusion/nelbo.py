"""MDLM's continuous-time NELBO for masked diffusion.

For one sequence at time t, with masked set M:
    NELBO_t = w(t) * sum_{i in M} -log p_theta(x0_i | x_t)        w(t) = -alpha'(t) / (1 - alpha(t))
averaged (in expectation over t ~ U[eps, 1]) per token. Per MDLM, the mean is over all tokens:
unmasked ones contribute zero but count.
"""

from __future__ import annotations

import torch

from atat_cli.diffusion.schedules import NoiseSchedule


def masked_token_nll(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    """-log p(x0_i | x_t) at masked positions (0 at unmasked ones), fp32, shape (B, T).

    Equal to gathering from subs_log_probs without building the carry-over tensor: under SUBS
    unmasked positions contribute exactly zero, and the mask id (the last logit) is dropped,
    which is the same as giving it probability zero."""
    assert mask_id == logits.shape[-1] - 1, "the mask id is the last logit"
    real = logits[..., :mask_id].float()
    # (B*T, V) rows: the transposed (B, V, T) layout costs extra copies in forward and backward
    nll = torch.nn.functional.cross_entropy(real.flatten(0, 1), x0.flatten(), reduction="none").view_as(x0)
    return torch.where(masked, nll, torch.zeros_like(nll))


def nelbo_per_token(nll: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Weight each masked token's NLL by w(t): (B, T) terms whose mean over tokens is the NELBO."""
    return schedule.loss_weight(t)[:, None] * nll
