"""Curriculum over training: easy -> medium -> hard, as per-token loss weights from importance.

A level l(progress) in [-1, 1] moves from -1 (easy) through 0 (medium) to +1 (hard), with smooth
(smoothstep) ramps of width `transition` centred on `easy_until` and `hard_from`. Token weights

    w_i = exp(l * sharpness * s_i) / mean_j exp(l * sharpness * s_j)

boost low-importance tokens while l < 0, are uniform at l = 0, and boost high-importance tokens
while l > 0; each sequence's weights average to 1, so the loss scale is unchanged. With
`plateau_patience` > 0, a validation plateau moves the curriculum to the next stage early.
"""

from __future__ import annotations

import torch

STAGES = ("easy", "medium", "hard")


def _ramp(progress: float, edge: float, width: float) -> float:
    """0 before the edge, 1 after it, smoothstep across [edge - width/2, edge + width/2]."""
    if width <= 0:
        return float(progress >= edge)
    x = min(1.0, max(0.0, (progress - edge) / width + 0.5))
    return x * x * (3 - 2 * x)


class Curriculum:
    def __init__(self, cfg):
        self.cfg = cfg
        self.stages_skipped = 0  # stages entered early because validation loss plateaued
        self.best = float("inf")
        self.stale = 0

    def level(self, progress: float) -> float:
        c = self.cfg
        scheduled = -1.0 + _ramp(progress, c.easy_until, c.transition) + _ramp(progress, c.hard_from, c.transition)
        return max(scheduled, -1.0 + self.stages_skipped)

    def stage(self, progress: float) -> str:
        return STAGES[round(self.level(progress)) + 1]

    def weights(self, importance: torch.Tensor, progress: float) -> torch.Tensor:
        w = torch.exp(self.level(progress) * self.cfg.sharpness * importance.float())
        return w / w.mean(dim=1, keepdim=True)

    def observe_validation(self, val_loss: float) -> None:
        if self.cfg.plateau_patience <= 0:
            return
        if val_loss < self.best:
            self.best, self.stale = val_loss, 0
            return
        self.stale += 1
        if self.stale >= self.cfg.plateau_patience and self.stages_skipped < 2:
            self.stages_skipped += 1
            self.stale = 0
            self.best = val_loss

    def state_dict(self) -> dict:
        return {"stages_skipped": self.stages_skipped, "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.stages_skipped, self.best, self.stale = state["stages_skipped"], state["best"], state["stale"]
