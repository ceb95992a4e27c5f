"""Training objectives behind one interface: given a model and a clean batch, the loss to
minimise and the metrics to log. The trainer does not know which one it runs.

MDLM and AR live here; ATAT's objective (atat/objective.py) extends MDLM's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from atat_cli.diffusion import build_schedule, diffusion_forward, masked_token_nll, nelbo_per_token, sample_times


def loss_name(method: str) -> str:
    """What a run's validation loss is called: AR's exact NLL, or the diffusion NELBO (a bound)."""
    return "NLL" if method == "ar" else "NELBO"


class Objective(ABC):
    @abstractmethod
    def loss(self, model, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Scalar loss for a clean batch x0 (B, T) and a dict of detached scalar tensors to log."""

    # Hooks for objectives that depend on training progress (ATAT's curriculum); no-ops here.
    def begin_step(self, step: int, max_steps: int) -> None:
        """Called before each optimiser step with the number of steps already taken."""

    def observe_validation(self, val_loss: float) -> None:
        """Called with each validation loss."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""


class MDLMObjective(Objective):
    """MDLM's continuous-time NELBO with uniform masking and (optionally) antithetic times."""

    def __init__(self, diffusion_cfg, mask_id: int):
        self.schedule = build_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
        self.eps = diffusion_cfg.eps
        self.antithetic = diffusion_cfg.antithetic
        self.mask_id = mask_id

    def loss(self, model, x0, generator):
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        logits, _, masked = diffusion_forward(model, x0, t, self.schedule, self.mask_id, generator)
        nll = masked_token_nll(logits, x0, masked, self.mask_id)
        terms = nelbo_per_token(nll, t, self.schedule)
        loss = terms.mean()  # mean over all tokens, as MDLM
        metrics = {"nelbo": loss.detach(), "mask_rate": masked.float().mean()}
        metrics.update(band_metrics(logits, x0, masked, terms.detach(), self.schedule.mask_rate(t),
                                    self.schedule.loss_weight(t), self.mask_id))
        return loss, metrics


class ARObjective(Objective):
    """Next-token cross-entropy; EOS stands in as the token before each block (documents are
    EOS-separated), so every token of the block is predicted, as in the diffusion NELBO."""

    def __init__(self, bos_id: int):
        self.bos_id = bos_id

    def loss(self, model, x0, generator):
        logits = model(shift_right(x0, self.bos_id))
        loss = F.cross_entropy(logits.float().flatten(0, 1), x0.flatten())
        return loss, {"nll": loss.detach()}


# Corruption bands by masking rate, shared by training logs and evaluation: low < 0.3 <= mid < 0.7 <= high.
BANDS = {"low": (0.0, 0.3), "mid": (0.3, 0.7), "high": (0.7, 1.0 + 1e-9)}


@torch.no_grad()
def band_metrics(logits, x0, masked, terms, rate, loss_weight, mask_id) -> dict:
    """Training diagnostics by corruption band of each sequence's masking rate: the mean NELBO of
    the band's sequences (`loss_<band>`) and the RMS norm of the loss gradient with respect to the
    logits of its masked tokens, w(t) * ||softmax - onehot|| (`grad_<band>`). Both come from
    tensors the step has already computed, so no extra backward pass is needed. Every key is
    always present (NaN for a band with no sequence), so all ranks log the same keys."""
    probs = torch.softmax(logits[..., :mask_id].float(), dim=-1)
    p_true = probs.gather(-1, x0[..., None])[..., 0]
    grad_sq = (probs.square().sum(-1) - 2 * p_true + 1) * loss_weight[:, None] ** 2  # (B, T)
    out = {}
    for band, (lo, hi) in BANDS.items():
        # an empty band gives NaN (a mean over nothing), which the trainer's averages skip
        rows = (rate >= lo) & (rate < hi)
        out[f"loss_{band}"] = terms[rows].mean()
        out[f"grad_{band}"] = grad_sq[masked & rows[:, None]].mean().sqrt()
    return out


def shift_right(x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat([bos, x0[:, :-1]], dim=1)


def build_objective(cfg, vocab_size: int, eos_id: int) -> Objective:
    if cfg.method == "ar":
        return ARObjective(bos_id=eos_id)
    if cfg.method == "atat":
        from atat_cli.atat.objective import ATATObjective  # atat builds on this module

        return ATATObjective(cfg, mask_id=vocab_size)
    return MDLMObjective(cfg.diffusion, mask_id=vocab_size)
