"""ATAT's building blocks: importance-driven masking probabilities and the curriculum. The ATAT
objective that combines them with the estimator is `objectives/atat.py`."""

from atat_cli.atat.adaptive_masking import mask_probabilities
from atat_cli.atat.curriculum import Curriculum

__all__ = ["Curriculum", "mask_probabilities"]
