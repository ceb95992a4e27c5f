"""Networks: the denoisers (the DiT, or DiMamba with model.backbone=dimamba), the AR baseline, ATAT's
importance estimator, and shared blocks."""

from atat_cli.diffusion import PositionSchedule, TokenSchedule, frequency_exponents
from atat_cli.models.ar import ARModel
from atat_cli.models.dimamba import DiMamba
from atat_cli.models.dit import DiT
from atat_cli.models.importance_estimator import ATATModel, ImportanceEstimator

# The diffusion denoisers by model.backbone (config.BACKBONES lists the same names).
DENOISERS = {"dit": DiT, "dimamba": DiMamba}


def build_model(cfg, vocab_size: int, token_counts=None):
    """The network a RunConfig asks for: AR for 'ar'; for 'mdlm' the denoiser model.backbone names
    (the DiT, or DiMamba), and for 'atat' that denoiser bundled with what ATAT switches on (built
    after the denoiser, so its initialisation is the same as MDLM's for the same seed): the
    importance estimator, and a per-token schedule whose exponents come from `token_counts` (the
    training split's counts per id; a run being loaded passes None and gets them from its
    checkpoint)."""
    if cfg.method == "ar":
        return ARModel(cfg.model, vocab_size)
    denoiser = DENOISERS[cfg.model.backbone](cfg.model, vocab_size)
    if cfg.method != "atat" or not (cfg.atat.importance.enabled or cfg.atat.schedule.kind != "uniform"):
        return denoiser
    estimator = token_schedule = None
    if cfg.atat.importance.enabled:
        estimator = ImportanceEstimator(cfg.atat.importance, vocab_size, cfg.model.seq_len,
                                        position_bias=cfg.atat.masking.strategy == "position")
    if cfg.atat.schedule.kind == "frequency":
        s = cfg.atat.schedule
        exponents = None if token_counts is None else frequency_exponents(token_counts, s.strength, s.max_exponent)
        token_schedule = TokenSchedule(vocab_size, exponents)
    elif cfg.atat.schedule.kind == "learned":
        token_schedule = TokenSchedule(vocab_size, learned=True)
    elif cfg.atat.schedule.kind == "position":
        token_schedule = PositionSchedule(cfg.model.seq_len, cfg.atat.schedule.window)
    return ATATModel(denoiser, estimator, token_schedule)


def importance_estimator_of(model):
    """The estimator inside a built model, or None (MDLM, AR, ATAT with importance off)."""
    return model.estimator if isinstance(model, ATATModel) else None


def token_schedule_of(model):
    """The per-token or per-position masking schedule inside a built model, or None (uniform masking)."""
    return model.token_schedule if isinstance(model, ATATModel) else None


def count_parameters(model, non_embedding: bool = False) -> int:
    params = model.named_parameters()
    return sum(p.numel() for name, p in params if not (non_embedding and name.startswith("embed")))


__all__ = ["ARModel", "ATATModel", "DENOISERS", "DiMamba", "DiT", "ImportanceEstimator", "build_model", "count_parameters",
           "importance_estimator_of", "token_schedule_of"]
