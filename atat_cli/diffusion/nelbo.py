"""MDLM's continuous-time NELBO for masked diffusion.

For one sequence at time t, with masked set M:
    NELBO_t = w(t) * sum_{i in M} -log p_theta(x0_i | x_t)        w(t) = -alpha'(t) / (1 - alpha(t))
averaged (in expectation over t ~ U[eps, 1]) per token. Per MDLM, the mean is over all tokens:
unmasked ones contribute zero but count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atat_cli.diffusion.schedules import NoiseSchedule


def masked_token_nll(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    """-log p(x0_i | x_t) at masked positions (0 at unmasked ones), fp32, shape (B, T).

    logits: (B, T, V + 1) at every position, or (N, >= V) rows at the masked positions only, in
    row-major order (what `DiT(x_t, level, at=masked)` returns). Equal to gathering from
    subs_log_probs without building the carry-over tensor: under SUBS unmasked positions
    contribute exactly zero, and the mask id (the last logit) is dropped, which is the same as
    giving it probability zero."""
    if logits.dim() == 3:
        assert mask_id == logits.shape[-1] - 1, "the mask id is the last logit"
        logits = logits[masked]  # (N, V + 1)
    nll = F.cross_entropy(logits[:, :mask_id].float(), x0[masked], reduction="none")  # (N,)
    return torch.zeros(x0.shape, dtype=nll.dtype, device=x0.device).masked_scatter(masked, nll)


def nelbo_per_token(nll: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Weight each masked token's NLL by w(t): (B, T) terms whose mean over tokens is the NELBO."""
    return schedule.loss_weight(t)[:, None] * nll
