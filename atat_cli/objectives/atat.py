"""Valid ATAT: adaptive time, adaptive tokens and per-token schedules that keep a bound.

Per step, for clean x0 (B, T):
  1. times t from a proposal pi(t), each sequence weighted by 1/pi(t) (`atat.time`,
     atat/time_proposal.py: adaptive, following the RMS loss or the RMS logit-gradient norm per
     time bin, or a fixed bell), or MDLM's antithetic uniform times;
  2. masking at the base rate r(t), per token at r(t)^{w_x} (`atat.schedule`,
     diffusion/token_schedule.py: exponents from corpus frequencies, or learned as in GenMD4, for
     which the batch's first half is masked twice at the same times and the leave-one-out
     score-function term trains w: same compute per step, half the distinct sequences), or per
     position, each inside its own window of the base rate so that the reverse process reveals the
     block from the left (diffusion/position_schedule.py);
  3. the estimator scores x_t (never x0) and, with `atat.tokens.keep` < 1, a subset of the masked
     positions is sampled in proportion to its predicted loss and reweighted by 1/q
     (atat/token_subset.py): the head and the cross-entropy run on those rows only;
  4. the NELBO terms of the forward process in use, + lambda * MSE of the estimator against
     the detached per-token loss target at the scored positions (its own parameters only).

What the loss estimates (`ATATConfig.kind()`):
  - uniform schedule: an unbiased estimate of the uniform-masking NELBO (steps 1 and 3 only move
    where samples fall and reweight them), so MDLM's optimum and MDLM's number; with a
    block-causal denoiser (model.block_size, BD3-LM), of its blockwise NELBO, the same way;
  - per-token or per-position schedule: an unbiased estimate of that process's own NELBO, a valid
    bound too;
  - `time.reweight=false`: the per-t terms reweighted by pi(t): same minimiser, but neither.
With every part off, the computation and the random draws are MDLM's.
"""

from __future__ import annotations

import torch

from atat_cli.atat.time_proposal import TimeProposal
from atat_cli.atat.token_subset import sample_kept
from atat_cli.diffusion import mask_tokens, paired_loss, sample_times, time_of
from atat_cli.models import importance_estimator_of, token_schedule_of
from atat_cli.objectives.base import (
    DiffusionObjective,
    band_metrics,
    denoise,
    estimator_loss,
    masked_terms,
    unwrap,
)


class ATATObjective(DiffusionObjective):
    def __init__(self, cfg, mask_id: int):
        super().__init__(cfg.diffusion, mask_id)
        self.atat = cfg.atat
        self.time = TimeProposal(cfg.atat.time) if cfg.atat.time.proposal != "uniform" else None

    def state_dict(self) -> dict:
        return {"time": self.time.state_dict() if self.time else None}

    def load_state_dict(self, state: dict) -> None:
        if self.time is not None and state.get("time"):
            self.time.load_state_dict(state["time"])

    def sample_times(self, n: int, generator, device):
        """(t (n,), per-sequence weight (n,) or None, proposal bin (n,) or None)."""
        if self.time is None:
            return sample_times(n, self.eps, self.antithetic, generator, device), None, None
        u, weight, k = self.time.sample(n, self.antithetic, generator, device)
        return time_of(u, self.eps), (weight if self.atat.time.reweight else None), k

    @torch.no_grad()
    def proposal_signal(self, logits, x0, scored, t, q, terms, nll) -> torch.Tensor:
        """Per sequence (B,), before any 1/pi weighting: its loss (`loss`), or the norm of the
        gradient of its loss with respect to the head's logits (`grad`): row i of a sequence gets
        (w(t) / q_i / T) (softmax_i - onehot_i), whose squared norm is sum p^2 - 2 p_true + 1 =
        (1 - p_true)^2 + sum_{v != true} p_v^2. `grad_bound` keeps the first part, a lower bound
        within a factor 2 of it, from the loss's own nll: no second softmax over the vocabulary
        (any positive signal keeps the estimate unbiased; only its variance depends on it)."""
        if self.atat.time.signal == "loss":
            return terms.mean(dim=1)
        sequence = scored.nonzero(as_tuple=True)[0]
        scale = self.schedule.loss_weight(t)[sequence] / x0.shape[1]
        if q is not None:
            scale = scale / q[scored]
        if self.atat.time.signal == "grad_bound":
            sq = torch.expm1(-nll[scored]).square() * scale**2
        else:
            probs = torch.softmax(logits.float(), dim=-1)
            p_true = probs.gather(-1, x0[scored][:, None])[:, 0]
            sq = (probs.square().sum(-1) - 2 * p_true + 1) * scale**2
        return torch.zeros(x0.shape[0], device=x0.device).index_add_(0, sequence, sq).sqrt()

    def loss(self, model, x0, generator, diagnostics=True):
        cfg = self.atat
        inner = unwrap(model)
        estimator, token_schedule = importance_estimator_of(inner), token_schedule_of(inner)
        paired = token_schedule is not None and token_schedule.learned
        if paired:  # rows i and n + i: one sequence at one time, masked twice
            x0 = x0[: x0.shape[0] // 2].repeat(2, 1)
        B, T = x0.shape
        t, time_weight, bins = self.sample_times(B // 2 if paired else B, generator, x0.device)
        if paired:
            t, time_weight, bins = (None if v is None else v.repeat(2) for v in (t, time_weight, bins))
        rate = self.schedule.mask_rate(t)
        mask_prob = rate[:, None] if token_schedule is None else token_schedule.mask_prob(rate, x0)
        x_t, masked = mask_tokens(x0, mask_prob, self.mask_id, generator)
        s = estimator(x_t, rate) if estimator is not None else None
        scored, q = masked, None
        if token_schedule is not None:  # a position masked with certainty has no term
            scored = token_schedule.scored(masked, mask_prob)
        if cfg.tokens.keep < 1:
            scored, q = sample_kept(s.detach(), scored, cfg.tokens.keep, cfg.tokens.floor, generator)
        logits = denoise(model, x_t, rate, scored, x0)  # the head runs at the scored positions only
        nll, terms = masked_terms(logits, x0, scored, t, self.schedule, self.mask_id, token_schedule)
        if q is not None:
            terms = torch.where(scored, terms / q, terms)
        nelbo = terms.mean()  # the unweighted-in-t estimate: what the proposal learns from
        if self.time is not None and self.time.learns:
            self.time.observe(bins, self.proposal_signal(logits, x0, scored, t, q, terms, nll))
        loss = nelbo if time_weight is None else (terms * time_weight[:, None]).mean()
        metrics = {"nelbo": loss.detach(), "mask_rate": masked.float().mean()}  # the estimate, 1/pi weights in
        if paired:  # same value; the gradient gains the masking's score-function term for w
            per_sequence = terms.mean(dim=1) * (1.0 if time_weight is None else time_weight)
            loss = paired_loss(per_sequence, token_schedule.log_mask_prob(rate, x0, masked))
            w = token_schedule.exponents.detach()
            metrics.update(exponent_mean=w.mean(), exponent_max=w.max())
        if q is not None:
            metrics["kept_fraction"] = scored.sum() / masked.sum().clamp(min=1)
        if time_weight is not None:
            metrics["time_weight_max"] = time_weight.max()
        if diagnostics:
            metrics.update(band_metrics(logits, x0, scored, terms.detach(), rate, self.schedule.loss_weight(t)))
        if s is not None:
            loss = loss + estimator_loss(s, nll, scored, cfg.importance, metrics)
        return loss, metrics
