"""The objective interface and the per-token terms every objective and the evaluator share.

An objective turns a model and a clean batch into the loss to minimise and the metrics to log;
the trainer does not know which one it runs. The NELBO and the AR NLL are written once, here:
the objectives average them for training, `evaluation/likelihood.py` sums them for evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from atat_cli.diffusion import (
    NoiseSchedule,
    PositionSchedule,
    TokenSchedule,
    build_schedule,
    mask_tokens,
    masked_token_nll,
    nelbo_per_token,
)


def loss_name(method: str) -> str:
    """What a run's validation loss is called: AR's exact NLL, or the diffusion NELBO (a bound)."""
    return "NLL" if method == "ar" else "NELBO"


class Objective(ABC):
    @abstractmethod
    def loss(self, model, x0: torch.Tensor, generator: torch.Generator,
             diagnostics: bool = True) -> tuple[torch.Tensor, dict]:
        """Scalar loss for a clean batch x0 (B, T) and a dict of detached scalar tensors to log.
        `diagnostics=False` skips what only the logs need (the per-band metrics cost a softmax
        over every masked row); the loss and its random draws are the same either way."""

    # Hooks for objectives that depend on training progress (ATAT's curriculum); no-ops here.
    def begin_step(self, step: int, max_steps: int) -> None:
        """Called before each optimiser step with the number of steps already taken."""

    def observe_validation(self, val_loss: float) -> None:
        """Called with each validation loss."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""


class DiffusionObjective(Objective):
    """What every masked-diffusion objective starts from: the noise schedule, how times are drawn
    (eps, antithetic) and the mask id."""

    def __init__(self, diffusion_cfg, mask_id: int):
        self.schedule = build_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
        self.eps = diffusion_cfg.eps
        self.antithetic = diffusion_cfg.antithetic
        self.mask_id = mask_id


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def block_size_of(model: torch.nn.Module) -> int:
    """Positions per block of a block-causal denoiser (model.block_size, BD3-LM), also inside
    ATAT's bundle; 0 for MDLM's bidirectional one and every other model."""
    inner = unwrap(model)
    return getattr(getattr(inner, "denoiser", inner), "block_size", 0)


def denoise(model, x_t: torch.Tensor, rate: torch.Tensor, at: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The denoiser's logits at the positions `at`; a block-causal denoiser (BD3-LM) also reads the
    clean blocks of x0 before each block, which makes the same NELBO terms its blockwise bound."""
    context = {"context": x0} if block_size_of(model) else {}
    return model(x_t, rate, at=at, **context)


# --- the diffusion NELBO -------------------------------------------------------------------


@dataclass
class NelboTerms:
    """One forward pass of the denoiser on x0 masked at times t, and its NELBO terms."""

    logits: torch.Tensor  # (N, V): the real vocabulary's logits at the N masked positions, row-major order
    masked: torch.Tensor  # (B, T) bool: masked positions with a term (all masked ones, but for a per-position schedule)
    nll: torch.Tensor  # (B, T) -log p(x0_i | x_t) at masked positions, 0 elsewhere (fp32)
    terms: torch.Tensor  # (B, T) the NELBO's per-token terms: their mean over all tokens is the NELBO
    x_t: torch.Tensor  # (B, T) the noisy input


def nelbo_terms(model, x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, mask_id: int,
                generator: torch.Generator, mask_prob: torch.Tensor | None = None,
                token_schedule: TokenSchedule | PositionSchedule | None = None) -> NelboTerms:
    """Mask x0 at times t (B,), with probability 1 - alpha(t) per token unless `mask_prob` (B, T)
    or a per-token `token_schedule` says otherwise, run the model on x_t and the noise level, and
    weight the masked tokens' NLL by w(t) = -alpha'(t) / (1 - alpha(t)) (or take the per-token
    schedule's own bound terms)."""
    rate = schedule.mask_rate(t)
    if token_schedule is not None:
        mask_prob = token_schedule.mask_prob(rate, x0)
    x_t, masked = mask_tokens(x0, rate[:, None] if mask_prob is None else mask_prob, mask_id, generator)
    if token_schedule is not None:  # a position masked with certainty has no term
        masked = token_schedule.scored(masked, mask_prob)
    logits = denoise(model, x_t, rate, masked, x0)  # the head runs at masked positions only
    nll, terms = masked_terms(logits, x0, masked, t, schedule, mask_id, token_schedule)
    return NelboTerms(logits, masked, nll, terms, x_t)


def masked_terms(logits, x0, at, t, schedule: NoiseSchedule, mask_id: int,
                 token_schedule: TokenSchedule | PositionSchedule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, terms), both (B, T) fp32 and zero off `at`, from the head's rows `logits` (N, >= V)
    at the positions `at` (B, T): MDLM's w(t) * nll, or the per-token schedule's bound terms."""
    if token_schedule is None:
        nll = masked_token_nll(logits, x0, at, mask_id)
        return nll, nelbo_per_token(nll, t, schedule)
    weight = token_schedule.row_weights(at, schedule.mask_rate(t), schedule.loss_weight(t))
    nll, terms = token_schedule.bound_terms(logits[:, :mask_id], x0[at], weight)
    zeros = torch.zeros(x0.shape, dtype=nll.dtype, device=x0.device)
    return zeros.masked_scatter(at, nll), zeros.masked_scatter(at, terms)


# Corruption bands by masking rate, shared by training logs and evaluation: low < 0.3 <= mid < 0.7 <= high.
BANDS = {"low": (0.0, 0.3), "mid": (0.3, 0.7), "high": (0.7, 1.0 + 1e-9)}


def band_rows(rate: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each band, which sequences (B,) have their masking rate in it."""
    return {band: (rate >= lo) & (rate < hi) for band, (lo, hi) in BANDS.items()}


@torch.no_grad()
def band_metrics(logits, x0, masked, terms, rate, loss_weight) -> dict:
    """Training diagnostics by corruption band of each sequence's masking rate: the mean NELBO of
    the band's sequences (`loss_<band>`) and the RMS norm of the loss gradient with respect to the
    logits of its masked tokens, w(t) * ||softmax - onehot|| (`grad_<band>`). Both come from
    tensors the step has already computed (`logits`: (N, V) at the masked positions), so no extra
    backward pass is needed. Every key is always present (NaN for a band with no sequence), so
    all ranks log the same keys."""
    sequence = masked.nonzero(as_tuple=True)[0]  # (N,) the sequence of each masked position
    probs = torch.softmax(logits.float(), dim=-1)  # (N, V)
    p_true = probs.gather(-1, x0[masked][:, None])[:, 0]
    grad_sq = (probs.square().sum(-1) - 2 * p_true + 1) * loss_weight[sequence] ** 2  # (N,)
    out = {}
    for band, rows in band_rows(rate).items():
        # an empty band gives NaN (a mean over nothing), which the trainer's averages skip
        out[f"loss_{band}"] = terms[rows].mean()
        out[f"grad_{band}"] = grad_sq[rows[sequence]].mean().sqrt()
    return out


# --- the importance estimator's target ---------------------------------------------------


def importance_targets(nll: torch.Tensor, masked: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(target values, positions where the importance loss applies), both (B, T)."""
    if target == "masked":
        return masked.float(), torch.ones_like(masked)
    nll = nll.detach()
    if target == "loss":
        return 1.0 - torch.exp(-nll), masked
    # unmasked positions sort last, so ranks 0..count-1 are the masked tokens' own
    key = torch.where(masked, nll, torch.full_like(nll, float("inf")))
    ranks = key.argsort(dim=1).argsort(dim=1).to(nll.dtype)
    count = masked.sum(dim=1, keepdim=True).clamp(min=1)
    return (ranks + 0.5) / count, masked


def estimator_loss(s: torch.Tensor, nll: torch.Tensor, scored: torch.Tensor, importance_cfg, metrics: dict) -> torch.Tensor:
    """lambda * the importance estimator's MSE against its target (`importance_targets`) where it
    applies; logs the MSE and the mean score into `metrics`."""
    values, where = importance_targets(nll, scored, importance_cfg.target)
    mse = ((s - values) ** 2 * where).sum() / where.sum().clamp(min=1)
    metrics["importance_loss"] = mse.detach()
    metrics["importance_mean"] = s.detach().mean()
    return importance_cfg.loss_weight * mse


# --- the AR NLL ----------------------------------------------------------------------------


def shift_right(x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat([bos, x0[:, :-1]], dim=1)


def ar_token_nll(model, x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """-log p(x0_i | x0_<i) per token, (B, T) fp32. EOS stands in as the token before each block
    (documents are EOS-separated), so every token of the block is predicted, as in the NELBO."""
    logits = model(shift_right(x0, bos_id))  # (B, T, V)
    # (B*T, V) rows: the transposed (B, V, T) layout costs extra copies in forward and backward
    return F.cross_entropy(logits.float().flatten(0, 1), x0.flatten(), reduction="none").view_as(x0)
