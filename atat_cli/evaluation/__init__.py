"""Evaluation: the uniform-masking NELBO (diffusion) or exact NLL (AR), per-band accuracy."""

from atat_cli.evaluation.likelihood import evaluate_likelihood, summarize

__all__ = ["evaluate_likelihood", "summarize"]
