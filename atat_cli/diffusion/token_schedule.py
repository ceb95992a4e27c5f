"""Per-token masking schedules (GenMD4, Shi et al. 2024 sec. 6) and the NELBO of their process.

Token id v stays clean at time t with probability alpha_v(t) = 1 - r(t)^{w_v}, where r(t) is the
base schedule's masking rate and w_v >= 1 an exponent per vocabulary id (every w_v = 1 is MDLM).
Its NELBO weight is -alpha_v'(t) / (1 - alpha_v(t)) = w_v r'(t) / r(t) = w_v * w(t), with w(t)
the base schedule's weight. Because masking now depends on the token, *which* positions are
masked tells something about what they hide, and the continuous-time bound keeps a term for it.
Per masked position with clean token x and model distribution mu over the vocabulary:

    w(t) * [ w_x * (-log mu_x) + sum_v w_v mu_v - w_x ]

(the reverse rate into v is w_v w(t) mu_v; this is the KL of the true reverse rates from the
model's). With every w_v = 1 the last two terms cancel (sum mu = 1) and it is MDLM's term. It is
a valid upper bound on the NLL for every mu, so it compares with MDLM's uniform NELBO.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def frequency_exponents(counts: np.ndarray, strength: float, max_exponent: float) -> torch.Tensor:
    """log w_v = clip(strength * log(f_v / f_typical), 0, log max_exponent), f_typical the
    frequency-weighted geometric mean and f add-one smoothed (so unseen ids are defined).

    Tokens more frequent than typical stay clean longer (w > 1, masked later); the rest keep the
    base rate (w = 1), so rare tokens are masked earlier than frequent ones. No exponent is below
    1 on purpose: every token is then masked with probability <= r(eps) at the smallest time, and
    the NELBO's integral over [eps, 1] leaves out no more than MDLM's does (with w < 1 a token
    would still be masked with probability r(eps)^w at t = eps, and the bound would miss it)."""
    f = np.asarray(counts, dtype=np.float64) + 1.0
    f /= f.sum()
    log_f = np.log(f)
    z = log_f - (f * log_f).sum()
    return torch.from_numpy(np.clip(strength * z, 0.0, np.log(max_exponent))).float()


class TokenSchedule(nn.Module):
    """Exponents w_v (a buffer: saved with the model, so eval and sampling follow the same schedule)."""

    def __init__(self, vocab_size: int, log_exponents: torch.Tensor | None = None):
        super().__init__()
        init = torch.zeros(vocab_size) if log_exponents is None else log_exponents.float()
        self.register_buffer("log_exponents", init.clone())

    @property
    def exponents(self) -> torch.Tensor:
        return self.log_exponents.exp()

    def mask_prob(self, rate: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(B, T) probability that each clean token is masked at base rate (B,): r^{w_x}."""
        return torch.exp(self.exponents[x0] * torch.log(rate.float())[:, None])

    def bound_terms(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
        """Rows at masked positions: logits (N, V) over the real vocabulary, target (N,) the clean
        tokens, weight (N,) the base w(t) of each row's sequence. Returns (nll, terms), both (N,):
        -log mu_x, and the bound's term above."""
        log_mu = F.log_softmax(logits.float(), dim=-1)
        nll = -log_mu.gather(-1, target[:, None])[:, 0]
        w = self.exponents
        w_x = w[target]
        terms = weight * (w_x * nll + log_mu.exp() @ w - w_x)
        return nll, terms
