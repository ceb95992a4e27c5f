"""Training objectives behind one interface (`base.Objective`): MDLM's NELBO, the AR NLL, valid
ATAT (`atat.py`), the seeds' literal ATAT (`atat_seed.py`, neither a bound nor an estimate of one),
and MDLM's method under the D3PM and SEDD parameterisations (`parameterisation.py`). Each objective module imports only `base`; the per-token NELBO and AR NLL live in `base`
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
from atat_cli.objectives.parameterisation import D3PMObjective, SEDDObjective, d3pm_terms, sedd_terms


def build_objective(cfg, vocab_size: int, eos_id: int) -> Objective:
    """The objective of a RunConfig's method; the mask id is the id after the vocabulary."""
    if cfg.method == "ar":
        return ARObjective(bos_id=eos_id)
    if cfg.method == "atat":
        seed = cfg.atat.is_seed_design()
        return (SeedATATObjective if seed else ATATObjective)(cfg, mask_id=vocab_size)
    # config.validate allows d3pm and sedd with --method mdlm only
    objective = {"subs": MDLMObjective, "d3pm": D3PMObjective, "sedd": SEDDObjective}[cfg.diffusion.parameterization]
    return objective(cfg.diffusion, mask_id=vocab_size)


__all__ = ["ARObjective", "ATATObjective", "BANDS", "D3PMObjective", "MDLMObjective", "NelboTerms", "Objective", "SEDDObjective",
           "SeedATATObjective", "ar_token_nll", "band_metrics", "build_objective", "d3pm_terms", "importance_targets",
           "loss_name", "nelbo_terms", "sedd_terms", "shift_right"]
