"""Absorbing-state diffusion: schedules (also per token), the forward process, SUBS and the NELBO."""

from atat_cli.diffusion.forward import mask_tokens, sample_times, time_of
from atat_cli.diffusion.nelbo import masked_token_nll, nelbo_per_token
from atat_cli.diffusion.schedules import SCHEDULES, NoiseSchedule, build_schedule
from atat_cli.diffusion.subs import subs_log_probs
from atat_cli.diffusion.token_schedule import TokenSchedule, frequency_exponents, paired_loss

__all__ = ["SCHEDULES", "NoiseSchedule", "TokenSchedule", "frequency_exponents", "build_schedule", "mask_tokens",
           "masked_token_nll", "nelbo_per_token", "paired_loss", "sample_times", "subs_log_probs", "time_of"]
