"""Networks: the DiT denoiser, the AR baseline, ATAT's importance estimator, and shared blocks."""

from atat_cli.models.ar import ARModel
from atat_cli.models.dit import DiT
from atat_cli.models.importance_estimator import DenoiserWithEstimator, ImportanceEstimator


def build_model(cfg, vocab_size: int):
    """The network a RunConfig asks for: AR for 'ar'; the DiT for 'mdlm', and for 'atat' the DiT
    bundled with an importance estimator when that is switched on (built after the DiT, so the
    DiT's initialisation is the same as MDLM's for the same seed)."""
    if cfg.method == "ar":
        return ARModel(cfg.model, vocab_size)
    dit = DiT(cfg.model, vocab_size)
    if cfg.method == "atat" and cfg.atat.importance.enabled:
        estimator = ImportanceEstimator(cfg.atat.importance, vocab_size, cfg.model.seq_len,
                                        position_bias=cfg.atat.masking.strategy == "position")
        return DenoiserWithEstimator(dit, estimator)
    return dit


def importance_estimator_of(model):
    """The estimator inside a built model, or None (MDLM, AR, ATAT with importance off)."""
    return model.estimator if isinstance(model, DenoiserWithEstimator) else None


def count_parameters(model, non_embedding: bool = False) -> int:
    params = model.named_parameters()
    return sum(p.numel() for name, p in params if not (non_embedding and name.startswith("embed")))


__all__ = ["ARModel", "DiT", "DenoiserWithEstimator", "ImportanceEstimator", "build_model",
           "count_parameters", "importance_estimator_of"]
