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

Learned exponents (GenMD4) need the gradient of E_{x_t ~ q_w}[L] with respect to w, and the
masking q_w is a discrete draw: besides the pathwise part (w inside the terms above) there is the
score-function part E[L grad log q_w(x_t | x0)]. `paired_loss` estimates it as GenMD4 does, with
two maskings of the same sequence at the same t and each one's loss as the other's baseline
(leave-one-out), which leaves the estimate unbiased.
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


# A learned exponent is w = exp(|raw|): >= 1, and d log w / d raw = +-1 everywhere, so Adam moves
# log w at the learning rate from the start (softplus would start flat near w = 1). raw starts
# just off 0 (|x| has no gradient at 0): w = 1.001, MDLM's schedule.
LEARNED_INIT = 1e-3


class TokenSchedule(nn.Module):
    """Exponents w_v >= 1: fixed (a buffer `log_exponents`, e.g. from corpus frequencies) or learned
    (GenMD4: a parameter `raw`, w_v = exp(|raw_v|), trained through the bound and a
    score-function term for the masking it samples; see `paired_loss`). Either way they are saved
    with the model, so eval and sampling follow the same schedule."""

    by_position = False

    def __init__(self, vocab_size: int, log_exponents: torch.Tensor | None = None, learned: bool = False):
        super().__init__()
        self.learned = learned
        if learned:
            # log w >= 0, as for the fixed exponents: see frequency_exponents for why
            self.raw = nn.Parameter(torch.full((vocab_size,), LEARNED_INIT))
        else:
            init = torch.zeros(vocab_size) if log_exponents is None else log_exponents.float()
            self.register_buffer("log_exponents", init.clone())

    @property
    def exponents(self) -> torch.Tensor:
        return (self.raw.abs() if self.learned else self.log_exponents).exp()

    def mask_prob(self, rate: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(B, T) probability that each clean token is masked at base rate (B,): r^{w_x}."""
        return torch.exp(self.exponents[x0] * torch.log(rate.float())[:, None])

    def log_mask_prob(self, rate: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """log q(x_t | x0) per sequence (B,): the log probability of the drawn masking pattern,
        sum over positions of log r^{w_x} where masked and log(1 - r^{w_x}) where not."""
        log_masked = self.exponents[x0] * torch.log(rate.float())[:, None]  # (B, T) log r^{w_x} < 0
        log_kept = torch.log(-torch.expm1(log_masked))  # log(1 - r^{w_x}), accurate as r^{w_x} -> 1
        return torch.where(masked, log_masked, log_kept).sum(dim=1)

    def scored(self, masked: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """Every masked position carries a bound term (r^{w_x} < 1 whenever r < 1)."""
        return masked

    def row_weights(self, at: torch.Tensor, rate: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
        """(N,) the base weight w(t) of each row's sequence at the positions `at` (B, T)."""
        return loss_weight[at.nonzero(as_tuple=True)[0]]

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


def paired_loss(loss: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The surrogate whose gradient is an unbiased estimate of grad E[L] for a learned schedule.
    loss, log_q (2n,): per-sequence losses and log q(x_t | x0), rows i and n + i the same sequence
    at the same time, masked independently. Per pair:

        (L1 + L2) / 2 + (1/2) * stopgrad(L1 - L2) * (log q1 - log q2)

    whose gradient adds to the pathwise one the leave-one-out REINFORCE term
    (1/2) sum_k (L_k - L_other) grad log q_k for the masking's dependence on w. The score term
    enters with its value subtracted, so the surrogate's value is the mean loss, what is logged."""
    n = loss.shape[0] // 2
    score = (0.5 * (loss[:n] - loss[n:]).detach() * (log_q[:n] - log_q[n:])).mean()
    return loss.mean() + score - score.detach()

