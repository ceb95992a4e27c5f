"""SUBS parameterisation (MDLM section 3.2): the denoiser never predicts the mask token and
carries unmasked tokens over unchanged. So the loss lives on masked positions only."""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def subs_log_probs(logits: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log p_theta(x_0 | x_t) over vocab + mask, in fp32.

    Masked positions: a softmax over the real vocabulary (the mask logit is -inf).
    Unmasked positions: a point mass on the observed token (log-prob 0 there, -inf elsewhere)."""
    logits = logits.float().index_fill(-1, torch.tensor([mask_id], device=logits.device), NEG_INF)
    log_probs = torch.log_softmax(logits, dim=-1)
    carry = torch.full_like(log_probs, NEG_INF).scatter_(-1, x_t[..., None], 0.0)
    return torch.where((x_t == mask_id)[..., None], log_probs, carry)
