"""ATAT: adaptive time-aware token masking (importance-driven masking, curriculum, objective)."""

from atat_cli.atat.adaptive_masking import mask_probabilities
from atat_cli.atat.curriculum import Curriculum
from atat_cli.atat.objective import ATATObjective, importance_targets

__all__ = ["ATATObjective", "Curriculum", "importance_targets", "mask_probabilities"]
