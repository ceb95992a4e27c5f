"""The autoregressive baseline's objective: next-token cross-entropy (the exact NLL)."""

from __future__ import annotations

from atat_cli.objectives.base import Objective, ar_token_nll


class ARObjective(Objective):
    def __init__(self, bos_id: int):
        self.bos_id = bos_id

    def loss(self, model, x0, generator, diagnostics=True):
        loss = ar_token_nll(model, x0, self.bos_id).mean()
        return loss, {"nll": loss.detach()}
