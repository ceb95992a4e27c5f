"""A proposal over diffusion time: adaptive, learned from the loss (improved DDPM's importance
sampling of L_vlb, Nichol & Dhariwal 2021), or a fixed bell (Hong et al. 2026).

u in [0, 1) (t = (1 - eps) u + eps) is split into K equal bins. Each bin keeps an EMA of the
squared per-sequence loss seen there, and

    pi_k = (1 - m) * sqrt(E[L^2]_k) / sum_j sqrt(E[L^2]_j) + m / K

(uniform until every bin has been seen MIN_SEEN times). Sampling u ~ pi and weighting the loss
by 1 / (K pi_k) keeps its expectation: E_pi[L(u) / (K pi(u))] = integral of L over [0, 1), the
uniform-masking NELBO, with less variance where the loss is large and noisy (small t: few masked
tokens, weight 1/t). The mix m bounds every weight by 1/m. Draws are stratified over pi's CDF
when sampling is antithetic, as MDLM stratifies u.

The bell proposal fixes pi_k instead to the mass of a normal N(center, width^2) cut to [0, 1] in
bin k, mixed with uniform the same way: training sees mid masking rates most, where the locality
of language leaves a masked token some clean neighbours. With the 1/pi weights it is the same
unbiased estimate; without them, the NELBO's per-t terms reweighted by pi.
"""

from __future__ import annotations

import torch

MIN_SEEN = 8  # observations per bin before the proposal leaves uniform


class TimeProposal:
    def __init__(self, cfg):
        """cfg: TimeConfig (proposal adaptive or bell; bins, uniform_mix, decay, center, width)."""
        self.bins, self.mix, self.decay = cfg.bins, cfg.uniform_mix, cfg.decay
        self.mean_sq = torch.zeros(self.bins, dtype=torch.float64)
        self.seen = torch.zeros(self.bins, dtype=torch.float64)
        self.learns = cfg.proposal == "adaptive"
        self.fixed = None if self.learns else self._mixed(bell_masses(self.bins, cfg.center, cfg.width))

    def _mixed(self, shape: torch.Tensor) -> torch.Tensor:
        return (1 - self.mix) * shape / shape.sum() + self.mix / self.bins

    def probabilities(self) -> torch.Tensor:
        """pi_k (K,), summing to 1."""
        if self.fixed is not None:
            return self.fixed
        if bool((self.seen < MIN_SEEN).any()):
            return torch.full((self.bins,), 1.0 / self.bins, dtype=torch.float64)
        return self._mixed(self.mean_sq.sqrt())

    def sample(self, n: int, antithetic: bool, generator: torch.Generator, device):
        """(u (n,), weight (n,) = 1 / (K pi(u)), bin (n,)). Uniform pi gives u = MDLM's draw."""
        v = torch.rand(n, generator=generator, device=device)
        if antithetic:
            v = (v / n + torch.arange(n, device=device) / n) % 1.0
        p = self.probabilities().to(device)
        cdf = p.cumsum(0)
        k = torch.searchsorted(cdf, v.double(), right=True).clamp(max=self.bins - 1)
        within = ((v.double() - (cdf[k] - p[k])) / p[k]).clamp(0.0, 1.0 - 1e-7)
        u = ((k.double() + within) / self.bins).to(v.dtype)
        return u, (1.0 / (self.bins * p[k])).to(v.dtype), k

    def observe(self, k: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold in the per-sequence losses (n,) drawn in bins k (n,), before any 1/pi weighting
        (the adaptive proposal only)."""
        sq = loss.detach().double() ** 2
        both = torch.zeros(2, self.bins, dtype=torch.float64, device=sq.device)
        both[0].index_add_(0, k, sq)
        both[1].index_add_(0, k, torch.ones_like(sq))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank folds in every rank's draws, so all ranks sample from one proposal
            torch.distributed.all_reduce(both)
        sums, counts = both.cpu()
        hit = counts > 0
        batch = sums[hit] / counts[hit]
        old = self.mean_sq[hit]
        self.mean_sq[hit] = torch.where(self.seen[hit] > 0, self.decay * old + (1 - self.decay) * batch, batch)
        self.seen += counts

    def state_dict(self) -> dict:
        return {"mean_sq": self.mean_sq.tolist(), "seen": self.seen.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.mean_sq = torch.tensor(state["mean_sq"], dtype=torch.float64)
        self.seen = torch.tensor(state["seen"], dtype=torch.float64)


def bell_masses(bins: int, center: float, width: float) -> torch.Tensor:
    """The mass of N(center, width^2) in each of `bins` equal bins of [0, 1) (K,), float64."""
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    cdf = torch.special.ndtr((edges - center) / width)
    return cdf.diff()
