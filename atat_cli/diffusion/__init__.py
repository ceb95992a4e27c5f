"""Absorbing-state diffusion: schedules, the forward process, SUBS and the NELBO."""

from atat_cli.diffusion.forward import mask_tokens, sample_times, time_of
from atat_cli.diffusion.nelbo import masked_token_nll, nelbo_per_token
from atat_cli.diffusion.schedules import SCHEDULES, NoiseSchedule, build_schedule
from atat_cli.diffusion.subs import subs_log_probs

__all__ = ["SCHEDULES", "NoiseSchedule", "build_schedule", "mask_tokens",
           "masked_token_nll", "nelbo_per_token", "sample_times", "subs_log_probs", "time_of"]
