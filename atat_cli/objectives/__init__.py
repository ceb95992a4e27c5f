"""Training objectives behind one interface (`base.Objective`): MDLM's NELBO, the AR NLL, valid
ATAT (`atat.py`) and the seeds' literal ATAT (`atat_seed.py`, neither a bound nor an estimate of one). Each objective module imports only `base`; the per-token NELBO and AR NLL live in `base`
and are what evaluation sums too."""

from atat_cli.objectives.ar import ARObjective
from atat_cli.objectives.atat import ATATObjective
from atat_cli.objectives.atat_seed import SeedATATObjective
from atat_cli.objectives.base import (
    BANDS,
    NelboTerms,
    Objective,
    ar_token_nll,
    band_metrics,
    importance_targets,
    loss_name,
    nelbo_terms,
    shift_right,
)
from atat_cli.objectives.mdlm import MDLMObjective


def build_objective(cfg, vocab_size: int, eos_id: int) -> Objective:
    """The objective of a RunConfig's method; the mask id is the id after the vocabulary."""
    if cfg.method == "ar":
        return ARObjective(bos_id=eos_id)
    if cfg.method == "atat":
        seed = cfg.atat.is_seed_design()
        return (SeedATATObjective if seed else ATATObjective)(cfg, mask_id=vocab_size)
    return MDLMObjective(cfg.diffusion, mask_id=vocab_size)


__all__ = ["ARObjective", "ATATObjective", "BANDS", "MDLMObjective", "NelboTerms", "Objective", "SeedATATObjective", "ar_token_nll",
           "band_metrics", "build_objective", "importance_targets", "loss_name", "nelbo_terms", "shift_right"]
