"""SEDD (Lou et al. 2024), absorbing case: score entropy in continuous time, and its analytic sampler.

The denoiser's output is a log score: at a masked position, s_y estimates the ratio
p_t(x_t with y there) / p_t(x_t) for each vocabulary token y. Parameterised as in SEDD's model and
MDLM's `_sedd_parameterization` (kuleshov-group/mdlm diffusion.py), with r(t) = alpha / (1 - alpha)
= 1 / (e^sigma - 1) the true ratio of a clean token to the mask under the forward process, l the
network's logits over the vocabulary (the mask's logit is not used):

    log s_y = l_y + log r(t) - log V,   i.e. s_y = r(t) mu_y with mu_y = exp(l_y) / V

(mu is an unnormalised guess at p(x0 = y | x_t); exact scores have mu = that posterior, sum 1).
The loss is the denoising score entropy (SEDD losses.py, graph_lib.Absorbing.score_entropy;
MDLM `_score_entropy`), weighted by sigma'(t), over masked positions with clean token x0:

    sigma'(t) [ sum_y s_y - r log s_x0 + r (log r - 1) ]  =  w(t) [ sum_y mu_y - log mu_x0 - 1 ]

(w(t) = sigma' r = -alpha' / (1 - alpha), MDLM's weight). Written with p = mu / sum mu it is
w(t) [ -log p_x0 + (S - 1 - log S) ], S = sum mu: SUBS's term for the normalised scores plus a
penalty >= 0 for scores that do not sum to the true ratio. Its expectation over t ~ U[eps, 1] is
SEDD's DWDSE, an upper bound on the NLL for any positive scores (SEDD Theorem 3.6; the prior
term is left out as in SEDD, the same eps share of unpaid tokens as MDLM's bound).

Sampling (SEDD sampling.py AnalyticPredictor, MDLM `_analytic_update`: the staggered score times
the transposed transition, "Tweedie tau-leaping"): from t to s < t a masked position becomes y
with probability s_y (e^{sigma_t - sigma_s} - 1) = mu_y (m_t - m_s) / m_t and stays masked with
the rest, 1 - S (m_t - m_s) / m_t (clipped at 0, as the reference's sampler does by drawing
from the positive entries only); the last step (s = 0) reveals every position left, from mu
(SEDD's Denoiser, MDLM's noise removal). With exact scores this is MDLM's ancestral step.
"""

from __future__ import annotations

import math

import torch


def sedd_log_score(logits: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """log s_y (N, V) from logits (N, V) over the vocabulary at masked positions whose masking
    rate is `rate` (N,): l_y + log(alpha / (1 - alpha)) - log V."""
    rate = rate.float()
    return logits.float() + (torch.log1p(-rate) - torch.log(rate))[:, None] - math.log(logits.shape[-1])


def score_entropy(logits: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """w(t) [sum_y mu_y - log mu_x0 - 1] per masked token, fp32 (N,): logits (N, V) over the
    vocabulary, x0 (N,) the clean tokens, weight (N,) w(t) of each row's time."""
    z = logits.float() - math.log(logits.shape[-1])  # log mu
    return weight.float() * (torch.logsumexp(z, dim=-1).exp() - z.gather(-1, x0[:, None])[:, 0] - 1.0)


def sedd_reveal(logits: torch.Tensor, m_t: float, m_s: float) -> torch.Tensor:
    """Probability (N,) that a masked position is revealed from t to s: min(1, S (m_t - m_s) / m_t),
    S = sum_y mu_y; logits (N, V) over the vocabulary. Given a reveal the token follows mu, i.e.
    softmax(logits)."""
    total = (torch.logsumexp(logits.float(), dim=-1) - math.log(logits.shape[-1])).exp()
    return (total * ((m_t - m_s) / m_t)).clamp(max=1.0)
