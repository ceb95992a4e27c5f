"""Noise schedules for absorbing-state (masking) diffusion, behind one interface.

alpha(t) is the probability that a token is still clean at time t in [0, 1]; the masking rate is
1 - alpha(t). The continuous-time NELBO weights the masked-token cross-entropy by
    w(t) = -alpha'(t) / (1 - alpha(t))
which MDLM writes as sigma'(t) / expm1(sigma(t)) with alpha = exp(-sigma).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from atat_cli.errors import AtatError


class NoiseSchedule(ABC):
    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is still clean at time t."""

    @abstractmethod
    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """d alpha / dt."""

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.alpha(t)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return -self.dalpha(t) / (1.0 - self.alpha(t))


class LogLinear(NoiseSchedule):
    """MDLM's default: sigma(t) = -log(1 - (1 - eps) t), so the masking rate (1 - eps) t is linear
    in t and the NELBO weight is exactly 1/t."""

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1.0 - self.eps))

    def loss_weight(self, t):
        return 1.0 / t  # = (1 - eps) / ((1 - eps) t), written out to avoid cancellation


class Cosine(NoiseSchedule):
    """alpha(t) = eps + (1 - eps) cos(pi t / 2): slow masking early, fast late."""

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def dalpha(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


SCHEDULES = {"loglinear": LogLinear, "cosine": Cosine}


def build_schedule(name: str, eps: float = 1e-3) -> NoiseSchedule:
    if name not in SCHEDULES:
        raise AtatError(f"unknown schedule '{name}'", f"choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](eps)
