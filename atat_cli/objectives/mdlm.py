"""MDLM's objective: the continuous-time NELBO under uniform masking, antithetic times."""

from __future__ import annotations

from atat_cli.diffusion import sample_times
from atat_cli.objectives.base import DiffusionObjective, band_metrics, nelbo_terms


class MDLMObjective(DiffusionObjective):
    """NELBO = E_t [ w(t) * sum_{i masked} -log p(x0_i | x_t) ] / T, t = (1 - eps) u + eps."""

    def loss(self, model, x0, generator, diagnostics=True):
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        out = nelbo_terms(model, x0, t, self.schedule, self.mask_id, generator)
        loss = out.terms.mean()  # mean over all tokens, as MDLM
        metrics = {"nelbo": loss.detach(), "mask_rate": out.masked.float().mean()}
        if diagnostics:
            metrics.update(band_metrics(out.logits, x0, out.masked, out.terms.detach(), self.schedule.mask_rate(t),
                                        self.schedule.loss_weight(t)))
        return loss, metrics
