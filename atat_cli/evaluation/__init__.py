"""Evaluation: the uniform-masking NELBO (diffusion) or exact NLL (AR), per-band accuracy."""

from atat_cli.evaluation.likelihood import BANDS, evaluate_likelihood, summarize

__all__ = ["BANDS", "evaluate_likelihood", "summarize"]
