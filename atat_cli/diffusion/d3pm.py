"""Absorbing-state D3PM (Austin et al. 2021) in discrete time: its per-token bound and reverse step.

Time runs over T steps, t_i = i / T (i = 0..T), with the noise schedule's alpha (alpha(0) = 1: x at
time 0 is the data) and masking rate m = 1 - alpha. The denoiser predicts x0 over the vocabulary
*and* the mask: x = softmax over all V + 1 logits, y = x_mask its mass on the mask (SUBS would
force y = 0 and carry unmasked tokens over; D3PM does neither). Its reverse step from t to s < t
is D3PM's x0-parameterisation, p(x_s | x_t) proportional to sum_x0 q(x_s, x_t | x0) x(x0): for a
masked x_t, with Z_t = m_t + y alpha_t,

    p(x_s = v) = x_v (m_t - m_s) / Z_t   (v in the vocabulary)
    p(x_s = mask) = (m_s + y alpha_s) / Z_t

(an unmasked x_t stays as it is: q(x_t = v | x0) is zero unless x0 = v). The true posterior
q(x_s | x_t = mask, x0) puts a = (m_t - m_s) / m_t on x0 and 1 - a on the mask, so per masked
token the step's KL is

    KL_i = log(1 + y alpha_t / m_t) - a log x_x0 - (m_s / m_t) log(1 + y alpha_s / m_s)

which is MDLM's `_d3pm_loss` (kuleshov-group/mdlm diffusion.py, written there for alpha_t = 1 - t:
term_1 and term_2 add up to it), with the schedule's alpha in place of 1 - t. The (m_s / m_t)
term is 0 at s = 0. The bound is

    NELBO = sum_{i=1..T} E_{x_{t_i}} [ sum_{masked j} KL_ij ] = T E_{i ~ U{1..T}} [ ... ]

The step i = 1 (s = 0) is D3PM's L_0, -log p(x0 | x_{t_1}). MDLM's code adds a reconstruction
term -log x(x0 | x0 unmasked) at time 0 besides; since alpha(0) = 1 the latent at time 0 *is*
the data, so the decoder there can be the identity, which costs 0 nats (and no second forward
pass): left out here, which keeps the bound valid and tighter. The prior term is left out as in
MDLM: at t = 1 an eps share of the tokens is still clean (alpha(1) = eps), the same eps share the
continuous-time bounds leave unpaid. With y = 0 the bound is a right Riemann sum of SUBS's
continuous-time integral, so it is at least that bound when a token's loss grows with the
masking rate (MDLM Table 7: continuous time is tighter).
"""

from __future__ import annotations

import torch


def discrete_times(u: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """u (B,) in [0, 1) -> (t, s) = (i / T, (i - 1) / T) with i = floor(u T) + 1 uniform on 1..T
    (stratified u gives stratified steps)."""
    i = torch.floor(u * steps).clamp(max=steps - 1) + 1
    return i / steps, (i - 1) / steps


def d3pm_kl(logits: torch.Tensor, x0: torch.Tensor, mask_id: int, m_t: torch.Tensor, m_s: torch.Tensor) -> torch.Tensor:
    """KL_i above per masked token, fp32 (N,). logits (N, V + 1) at masked positions (the mask's
    last), x0 (N,) their clean tokens, m_t, m_s (N,) the masking rates at t > s (m_s may be 0)."""
    log_x = torch.log_softmax(logits.float(), dim=-1)  # (N, V + 1)
    m_t, m_s = m_t.float(), m_s.float()
    y, alpha_t, alpha_s = log_x[:, mask_id].exp(), 1.0 - m_t, 1.0 - m_s
    log_x0 = log_x.gather(-1, x0[:, None])[:, 0]
    later = torch.where(m_s > 0, m_s / m_t * torch.log1p(y * alpha_s / m_s.clamp_min(1e-30)), torch.zeros_like(y))
    return torch.log1p(y * alpha_t / m_t) - (m_t - m_s) / m_t * log_x0 - later


def d3pm_reveal(logits: torch.Tensor, mask_id: int, m_t: float, m_s: float) -> torch.Tensor:
    """Probability (N,) that a masked position is revealed in the reverse step t -> s: 1 - p(x_s =
    mask) = (m_t - m_s)(1 - y) / Z_t. Given a reveal, the token follows x over the vocabulary,
    i.e. softmax(logits[:, :mask_id])."""
    y = torch.softmax(logits.float(), dim=-1)[:, mask_id]
    return (m_t - m_s) * (1.0 - y) / (m_t + y * (1.0 - m_t))
