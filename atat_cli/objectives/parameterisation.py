"""The NELBOs of the other parameterisations (`diffusion.parameterization`): D3PM in discrete time
(diffusion/d3pm.py) and SEDD's score entropy (diffusion/sedd.py), as per-token terms that their
objectives average for training and `evaluation/likelihood.py` sums for evaluation, like
`base.nelbo_terms` for SUBS. Both mask uniformly (rate m(t) per token), as MDLM does; only how the
denoiser's output is read, and the bound, change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atat_cli.diffusion import NoiseSchedule, d3pm_kl, discrete_times, mask_tokens, sample_times, score_entropy
from atat_cli.objectives.base import DiffusionObjective, NelboTerms, band_rows


def _scatter(masked: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, T) zeros with the per-masked-token values `rows` (N,) in place."""
    return torch.zeros(masked.shape, dtype=rows.dtype, device=rows.device).masked_scatter(masked, rows)


def d3pm_terms(model, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor, steps: int, schedule: NoiseSchedule,
               mask_id: int, generator: torch.Generator) -> NelboTerms:
    """Mask x0 at the discrete times t = i / T (B,), run the model, and return T * KL_i per masked
    token (diffusion/d3pm.py): their mean over tokens, averaged over i ~ U{1..T}, is the D3PM NELBO.
    `logits` are the (N, V + 1) rows at the masked positions, the mask's logit last (D3PM predicts
    it too, so the head runs everywhere and the masked rows are gathered); `nll` is -log x(x0)."""
    m_t, m_s = schedule.mask_rate(t), schedule.mask_rate(s)
    x_t, masked = mask_tokens(x0, m_t[:, None], mask_id, generator)
    logits = model(x_t, m_t)[masked]  # (N, V + 1)
    sequence = masked.nonzero(as_tuple=True)[0]  # (N,) the sequence of each row
    kl = d3pm_kl(logits, x0[masked], mask_id, m_t[sequence], m_s[sequence])
    nll = F.cross_entropy(logits.float(), x0[masked], reduction="none")
    return NelboTerms(logits, masked, _scatter(masked, nll), _scatter(masked, steps * kl), x_t)


def sedd_terms(model, x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, mask_id: int,
               generator: torch.Generator) -> NelboTerms:
    """Mask x0 at times t (B,), run the model at the masked positions, and return SEDD's score
    entropy per masked token (diffusion/sedd.py): their mean over tokens, averaged over t, is the
    DWDSE. `logits` (N, V) are the log scores' logits over the vocabulary; `nll` is -log of the
    normalised scores."""
    rate = schedule.mask_rate(t)
    x_t, masked = mask_tokens(x0, rate[:, None], mask_id, generator)
    logits = model(x_t, rate, at=masked)[:, :mask_id]  # (N, V)
    sequence = masked.nonzero(as_tuple=True)[0]
    terms = score_entropy(logits, x0[masked], schedule.loss_weight(t)[sequence])
    nll = F.cross_entropy(logits.float(), x0[masked], reduction="none")
    return NelboTerms(logits, masked, _scatter(masked, nll), _scatter(masked, terms), x_t)


@torch.no_grad()
def exact_band_metrics(row_terms, out: NelboTerms, rate: torch.Tensor) -> dict:
    """`base.band_metrics` for any per-token terms: the mean bound of each band's sequences
    (`loss_<band>`) and the RMS norm of each masked token's term's gradient with respect to its
    own logits (`grad_<band>`), by autograd through `row_terms(logits) -> (N,)` on a detached
    copy (one elementwise pass over the rows, no pass through the network)."""
    with torch.enable_grad():
        z = out.logits.detach().float().requires_grad_()
        (grad,) = torch.autograd.grad(row_terms(z).sum(), z)
    grad_sq = grad.square().sum(dim=-1)  # (N,)
    sequence = out.masked.nonzero(as_tuple=True)[0]
    metrics = {}
    for band, rows in band_rows(rate).items():
        metrics[f"loss_{band}"] = out.terms[rows].mean()  # NaN for an empty band, which the logs skip
        metrics[f"grad_{band}"] = grad_sq[rows[sequence]].mean().sqrt()
    return metrics


class D3PMObjective(DiffusionObjective):
    """NELBO = T E_{i ~ U{1..T}} [ sum_{j masked at t_i} KL_ij ] / L, i stratified over the batch
    (antithetic) as MDLM's times are."""

    def __init__(self, diffusion_cfg, mask_id: int):
        super().__init__(diffusion_cfg, mask_id)
        self.steps = diffusion_cfg.steps

    def loss(self, model, x0, generator, diagnostics=True):
        u = sample_times(x0.shape[0], 0.0, self.antithetic, generator, x0.device)  # eps = 0: u itself
        t, s = discrete_times(u, self.steps)
        out = d3pm_terms(model, x0, t, s, self.steps, self.schedule, self.mask_id, generator)
        loss = out.terms.mean()
        metrics = {"nelbo": loss.detach(), "mask_rate": out.masked.float().mean()}
        if diagnostics:
            sequence = out.masked.nonzero(as_tuple=True)[0]
            m_t, m_s = self.schedule.mask_rate(t)[sequence], self.schedule.mask_rate(s)[sequence]
            x0_rows = x0[out.masked]
            metrics.update(exact_band_metrics(
                lambda z: self.steps * d3pm_kl(z, x0_rows, self.mask_id, m_t, m_s), out, self.schedule.mask_rate(t)))
        return loss, metrics


class SEDDObjective(DiffusionObjective):
    """DWDSE = E_t [ sum_{j masked} w(t) (sum_y mu_y - log mu_x0 - 1) ] / L, t = (1 - eps) u + eps
    with antithetic u, as MDLM trains SEDD."""

    def loss(self, model, x0, generator, diagnostics=True):
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        out = sedd_terms(model, x0, t, self.schedule, self.mask_id, generator)
        loss = out.terms.mean()
        metrics = {"nelbo": loss.detach(), "mask_rate": out.masked.float().mean()}
        if diagnostics:
            sequence = out.masked.nonzero(as_tuple=True)[0]
            weight, x0_rows = self.schedule.loss_weight(t)[sequence], x0[out.masked]
            metrics.update(exact_band_metrics(lambda z: score_entropy(z, x0_rows, weight), out,
                                              self.schedule.mask_rate(t)))
        return loss, metrics
