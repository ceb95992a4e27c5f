"""ATAT's building blocks. Valid designs: an adaptive proposal over diffusion time
(time_proposal.py) and an importance-sampled subset of the masked positions (token_subset.py);
per-token masking schedules are diffusion math (diffusion/token_schedule.py). The seeds' design:
importance-driven masking probabilities and the curriculum. The objectives that combine them are
`objectives/atat.py` and `objectives/atat_seed.py`."""

from atat_cli.atat.adaptive_masking import mask_probabilities
from atat_cli.atat.curriculum import Curriculum
from atat_cli.atat.time_proposal import TimeProposal
from atat_cli.atat.token_subset import keep_probabilities, sample_kept

__all__ = ["Curriculum", "TimeProposal", "keep_probabilities", "mask_probabilities", "sample_kept"]
