"""Absorbing-state diffusion: schedules (also per token and per position), the forward process, the NELBO, and the
three parameterisations of the reverse process: SUBS (MDLM), D3PM (discrete time) and SEDD."""

from atat_cli.diffusion.d3pm import d3pm_kl, d3pm_reveal, discrete_times
from atat_cli.diffusion.forward import mask_tokens, sample_times, time_of
from atat_cli.diffusion.nelbo import masked_token_nll, nelbo_per_token
from atat_cli.diffusion.position_schedule import PositionSchedule
from atat_cli.diffusion.schedules import SCHEDULES, NoiseSchedule, build_schedule
from atat_cli.diffusion.sedd import score_entropy, sedd_log_score, sedd_reveal
from atat_cli.diffusion.subs import subs_log_probs
from atat_cli.diffusion.token_schedule import TokenSchedule, frequency_exponents, paired_loss

__all__ = ["SCHEDULES", "NoiseSchedule", "PositionSchedule", "TokenSchedule", "build_schedule", "d3pm_kl", "d3pm_reveal", "discrete_times",
           "frequency_exponents", "mask_tokens", "masked_token_nll", "nelbo_per_token", "paired_loss", "sample_times",
           "score_entropy", "sedd_log_score", "sedd_reveal", "subs_log_probs", "time_of"]
