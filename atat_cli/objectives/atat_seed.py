"""The seed documents' literal ATAT (preset `atat/seed`): curriculum-weighted denoising loss +
lambda * importance loss, with masking driven by an estimator that sees the clean text.

It is NEITHER a bound NOR an unbiased estimate of one: masking that depends on x0 and per-token
weights that depend on x0 both move the optimum away from p(x0_i | x_t) (see `objectives/atat.py`
for the valid designs). It is kept to measure the seeds' claims as they were made.

Per step, for clean x0 and times t (MDLM's antithetic sampler):
  1. importance s = estimator(x0, r(t)) in [0, 1] per position;
  2. masking with per-position probabilities from s (adaptive_masking.py), mean rate r(t);
  3. the MDLM NELBO terms w(t) * (-log p(x0_i | x_t)) at masked positions, weighted per token by
     the curriculum (curriculum.py);
  4. + lambda * MSE between s and its target, at masked positions unless said otherwise:
     `rank` = where the token's loss ranks among the sequence's masked tokens, (rank + 1/2) / count,
     uniform on (0, 1) at every stage of training, so relative difficulty is learnable from the
     first steps; `loss` = 1 - exp(-per-token loss), the probability mass the denoiser misses
     (absolute difficulty: ~1 for every token while the model is young); or `masked` = the mask
     indicator at every position, the seed documents' literal target. Losses are detached.
s reaches masking and weights detached, so the estimator cannot lower the main loss by rating
tokens easy. With the estimator, adaptive masking and the curriculum all off, the computation
and the random draws are exactly MDLM's.
"""

from __future__ import annotations

import torch

from atat_cli.atat.adaptive_masking import mask_probabilities
from atat_cli.atat.curriculum import Curriculum
from atat_cli.diffusion import sample_times
from atat_cli.models import importance_estimator_of
from atat_cli.objectives.base import DiffusionObjective, band_metrics, estimator_loss, nelbo_terms, unwrap


class SeedATATObjective(DiffusionObjective):
    def __init__(self, cfg, mask_id: int):
        super().__init__(cfg.diffusion, mask_id)
        self.atat = cfg.atat
        self.curriculum = Curriculum(cfg.atat.curriculum) if cfg.atat.curriculum.enabled else None
        self.progress = 0.0

    def begin_step(self, step: int, max_steps: int) -> None:
        self.progress = step / max_steps

    def observe_validation(self, val_loss: float) -> None:
        if self.curriculum is not None:
            self.curriculum.observe_validation(val_loss)

    def state_dict(self) -> dict:
        return {"curriculum": self.curriculum.state_dict() if self.curriculum else None}

    def load_state_dict(self, state: dict) -> None:
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])

    def loss(self, model, x0, generator, diagnostics=True):
        cfg = self.atat
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        rate = self.schedule.mask_rate(t)
        estimator = importance_estimator_of(unwrap(model))
        s = estimator(x0, rate) if estimator is not None else None
        mask_prob = None  # uniform: MDLM's masking
        if s is not None and cfg.masking.strategy != "uniform":
            mask_prob = mask_probabilities(s.detach(), rate, cfg.masking.strategy, cfg.masking.temperature)
        out = nelbo_terms(model, x0, t, self.schedule, self.mask_id, generator, mask_prob)
        logits, masked, nll, terms = out.logits, out.masked, out.nll, out.terms
        nelbo = terms.mean()
        metrics = {"nelbo": nelbo.detach(), "mask_rate": masked.float().mean(), "mask_rate_scheduled": rate.mean()}
        if diagnostics:
            metrics.update(band_metrics(logits, x0, masked, terms.detach(), rate, self.schedule.loss_weight(t)))
        loss = nelbo
        if self.curriculum is not None:
            weights = self.curriculum.weights(s.detach(), self.progress)
            loss = (terms * weights).mean()
            metrics["curriculum_level"] = torch.tensor(self.curriculum.level(self.progress))
            metrics["curriculum_stage"] = self.curriculum.stage(self.progress)
            # all tokens average 1 by construction; the masked ones show what the curriculum favours
            metrics["weight_masked_mean"] = (weights * masked).sum() / masked.sum().clamp(min=1)
            metrics["weighted_loss"] = loss.detach()
        if s is not None:
            loss = loss + estimator_loss(s, nll, masked, cfg.importance, metrics)
        return loss, metrics
