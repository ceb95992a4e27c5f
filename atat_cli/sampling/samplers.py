"""Samplers for masked diffusion models, behind one interface, plus left-to-right AR sampling.

    out = sample(denoiser, x, mask_id, settings, fill=None, generator=g, importance=None,
                 schedule=None, parameterization="subs", record=False)

`denoiser(x, noise_level) -> logits (B, T, V + 1)` is the DiT (or any callable like it; the
mask id is the last logit and is never sampled). One that can only be called on the whole batch
(a cached one, sampling/block_cache.py) says so with `whole_batch = True`. `x` (B, T) holds the mask id at the positions
to fill; `fill` (B, T) may restrict filling to some of them (semi-autoregressive blocks keep
later blocks masked but visible). Tokens that are not masked are never changed. The result is a
`SampleOutput`: the tokens, the NFE (batched denoiser calls), steps and NFE per row, and, with
`record=True`, the trajectory (one `StepRecord` per step) for pictures of the process.

Samplers (all batched tensor code: the only Python loop is over steps):
- ancestral: MDLM's reverse process on a time grid. From time s to t < s each masked token is
  revealed with probability (m(s) - m(t)) / m(s), m = 1 - alpha the schedule's masking rate
  (not t itself: that is only right for the log-linear schedule). With a per-token schedule
  (token v masked at m^{w_v}) the reveal follows it: v with probability mu_v (1 - (m(t)/m(s))^{w_v}). A row in which no token
  changed keeps its logits for the next step and costs no NFE (MDLM's caching; exact because
  the denoiser's output depends on x_t, and only negligibly on the noise level).
- remdm: ReMDM (Wang et al. 2025), ancestral sampling that may also re-mask decoded tokens.
  From t to s < t (alpha = 1 - m) a decoded token is re-masked with probability sigma_t and a
  masked one revealed with probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t), so the
  expected masked fraction is still m(s) for any sigma_t <= sigma_max = min(1, m(s) / alpha_t).
  sigma_t = min(eta, sigma_max) (cap) or eta sigma_max (rescale); conf spends cap's expected
  re-masks unevenly, on each decoded token in proportion to softmax(-p) over the row's decoded
  tokens, p the probability the token had when it was drawn (the DiT's logits at visible
  positions are not trained, so they cannot score them). eta = 0 is ancestral sampling. Tokens
  outside the positions to fill (the prompt) are never re-masked; the last step re-masks nothing.
- confidence / uncertainty / importance: at each step score every masked position and reveal
  the k best: most confident first (MaskGIT, LLaDA), most uncertain first (the seed documents'
  order), or by priority = normalised uncertainty x importance from the ATAT estimator. k
  follows the time grid through the schedule, so the masked fraction tracks m(t_i) / m(t_0).
- adaptive steps (with an ordered sampler): `threshold` reveals every masked position whose
  confidence (top probability) is at least the threshold, and at least the best-scored one
  (Fast-dLLM); `entropy-bound` walks the positions in the sampler's order and reveals the
  longest prefix whose summed entropy minus its largest entropy is at most gamma (EB-sampler).
  Both run until nothing is masked.

Parameterisations (`parameterization`, the run's diffusion.parameterization): under `subs` the
logits are MDLM's x0 prediction. Under `d3pm` and `sedd`, ancestral sampling is that
parameterisation's own reverse process: D3PM's x0-parameterised step, in which the prediction's
mass y on the mask keeps a position masked longer (diffusion/d3pm.py, d3pm_reveal), or SEDD's
analytic (Tweedie tau-leaping) step from the scores, in which their total S sets the reveal
probability (diffusion/sedd.py, sedd_reveal); either way a revealed position draws its token from
the softmax over the vocabulary, and the last step reveals every position left (MDLM's noise
removal). The ordered samplers read only a distribution over the vocabulary, the softmax of the
logits without the mask: D3PM's x0 prediction given it is no mask, SEDD's normalised scores.
remdm re-masks under MDLM's SUBS posterior and is refused for them.

Uncertainty metrics (higher = less sure): `entropy` (nats), `maxprob` (1 - top probability),
`margin` (1 - (top1 - top2 probability); Kim et al. 2025). They are computed on the model's own
distribution; temperature and top-p shape only the draw of the token itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from atat_cli.diffusion.d3pm import d3pm_reveal
from atat_cli.diffusion.schedules import LogLinear, NoiseSchedule
from atat_cli.diffusion.sedd import sedd_reveal
from atat_cli.errors import AtatError, require
from atat_cli.sampling.categorical import sample_categorical

SAMPLERS = ("ancestral", "remdm", "confidence", "uncertainty", "importance")
REMASK = ("cap", "rescale", "conf")
ADAPTIVE = ("threshold", "entropy-bound")
METRICS = ("entropy", "margin", "maxprob")
GRIDS = ("linear", "cosine")
# The samplers each diffusion.parameterization can use (see the module docstring).
PARAMETERIZATION_SAMPLERS = {"subs": SAMPLERS, "d3pm": ("ancestral", "confidence", "uncertainty", "importance"),
                             "sedd": ("ancestral", "confidence", "uncertainty", "importance")}
OWN_REVERSE = {"subs": "MDLM's reverse process", "d3pm": "D3PM's reverse process",
               "sedd": "SEDD's analytic sampler"}

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Importance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "ancestral"  # one of SAMPLERS
    steps: int = 64  # steps of the time grid (fixed-step samplers; per block in semi-AR generation)
    adaptive: Optional[str] = None  # None (fixed steps), "threshold" or "entropy-bound"
    threshold: float = 0.9  # adaptive threshold: reveal positions with top probability >= this
    gamma: float = 0.1  # entropy bound (nats) of the EB-sampler
    metric: str = "entropy"  # uncertainty metric of the ordered samplers
    grid: str = "linear"  # time grid: linear, or cosine (MD4/MaskGIT: few tokens early, many late)
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    remask: str = "cap"  # remdm: how sigma_t is chosen, one of REMASK
    eta: float = 0.02  # remdm: the cap on sigma_t (cap, conf) or its share of sigma_t^max (rescale)

    @classmethod
    def requested(cls, sampler: str | None = None, steps: int | None = None, adaptive: str | None = None,
                  **rest) -> SamplerSettings:
        """Settings from what a user asked for, with the defaults that depend on it: adaptive steps
        need an ordered sampler (confidence unless another is named), fixed steps default to 64."""
        if steps is not None and adaptive is not None:
            raise AtatError("choose either --steps N or --adaptive RULE, not both")
        return cls(sampler=sampler or ("confidence" if adaptive else "ancestral"),
                   steps=cls.steps if steps is None else steps, adaptive=adaptive, **rest).validate()

    def validate(self) -> SamplerSettings:
        require(self.sampler in SAMPLERS, f"unknown sampler '{self.sampler}'", f"choose one of: {', '.join(SAMPLERS)}")
        require(self.adaptive is None or self.adaptive in ADAPTIVE, f"unknown adaptive rule '{self.adaptive}'",
                f"choose one of: {', '.join(ADAPTIVE)}")
        require(self.adaptive is None or self.sampler not in ("ancestral", "remdm"),
                f"adaptive steps need an ordered sampler, not {self.sampler}",
                "use --sampler confidence (Fast-dLLM / EB-sampler order), uncertainty or importance")
        require(isinstance(self.steps, int) and self.steps >= 1, f"steps must be at least 1 (got {self.steps})")
        require(0.0 < self.threshold <= 1.0, f"threshold must be in (0, 1] (got {self.threshold})", "e.g. --threshold 0.9")
        require(self.gamma >= 0.0 and math.isfinite(self.gamma), f"gamma must be a finite number >= 0 (got {self.gamma})",
                "e.g. --gamma 0.1")
        require(self.metric in METRICS, f"unknown uncertainty metric '{self.metric}'",
                f"choose one of: {', '.join(METRICS)}")
        require(self.grid in GRIDS, f"unknown time grid '{self.grid}'", f"choose one of: {', '.join(GRIDS)}")
        require(self.temperature >= 0.0 and math.isfinite(self.temperature),
                f"temperature must be >= 0 (got {self.temperature})", "0 is greedy, 1 the model's distribution")
        require(0.0 < self.top_p <= 1.0, f"top-p must be in (0, 1] (got {self.top_p})")
        require(self.remask in REMASK, f"unknown remasking schedule '{self.remask}'", f"choose one of: {', '.join(REMASK)}")
        require(0.0 <= self.eta <= 1.0, f"eta must be in [0, 1] (got {self.eta})", "e.g. --eta 0.02")
        return self

    def describe(self) -> str:
        if self.sampler == "remdm":
            return f"remdm-{self.remask}({self.eta:g})/{self.steps}"
        # the ordered samplers' metric, when it is not the default entropy
        order = self.sampler if self.metric == "entropy" or self.sampler == "ancestral" else f"{self.sampler}-{self.metric}"
        if self.adaptive == "threshold":
            return f"{order}+threshold({self.threshold:g})"
        if self.adaptive == "entropy-bound":
            return f"{order}+entropy-bound({self.gamma:g})"
        return f"{order}/{self.steps}"


@dataclass
class StepRecord:
    """The state after one step (CPU tensors, (B, T)); only built when record=True."""

    step: int
    nfe: int  # batched denoiser calls so far
    tokens: torch.Tensor  # the sequence after this step (mask id where still masked)
    unmasked: torch.Tensor  # bool: positions revealed at this step
    confidence: torch.Tensor  # probability the model gave each revealed token (0 elsewhere)
    importance: Optional[torch.Tensor] = None  # the estimator's importance at this step, when there is one


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # (B, T)
    nfe: int  # batched denoiser calls (what the wall time pays for)
    row_nfe: torch.Tensor  # (B,) calls in which each row was evaluated
    row_steps: torch.Tensor  # (B,) steps each row needed
    trajectory: Optional[list[StepRecord]] = None


def time_grid(steps: int, grid: str, device) -> torch.Tensor:
    """Times t_0 = 1 > t_1 > ... > t_steps = 0 (float64)."""
    u = torch.arange(steps + 1, dtype=torch.float64, device=device) / steps
    return 1.0 - u if grid == "linear" else torch.cos(0.5 * math.pi * u)


def uncertainty(probs: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, V) probabilities -> (N,) uncertainty, higher = less sure."""
    if metric == "entropy":
        return torch.special.entr(probs).sum(dim=-1)
    if metric == "maxprob":
        return 1.0 - probs.max(dim=-1).values
    top2 = probs.topk(2, dim=-1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def softmax_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., V) logits -> the entropy (nats), log-sum-exp and largest logit of softmax(logits),
    in fp32, without materialising the probabilities' log: H = lse - sum_v p_v z_v."""
    z = logits.float()
    top = z.amax(dim=-1, keepdim=True)
    e = (z - top).exp()
    total = e.sum(dim=-1)
    lse = total.log() + top.squeeze(-1)
    return lse - (e * z).sum(dim=-1) / total, lse, top.squeeze(-1)


# Scoring every position over a large vocabulary is several passes over (B, T, V) in eager mode
# and one fused pass compiled (~10x faster on CPU): worth the compilation (seconds, once per
# process) only for large steps. Small ones, and any machine where compiling fails, run eager.
COMPILE_MIN_ELEMENTS = 2**24
_compiled_stats = None


def _softmax_stats(logits: torch.Tensor):
    global _compiled_stats
    if logits.numel() < COMPILE_MIN_ELEMENTS or _compiled_stats is False:
        return softmax_stats(logits)
    if _compiled_stats is None:
        _compiled_stats = torch.compile(softmax_stats, dynamic=True)
    try:
        return _compiled_stats(logits)
    except Exception:  # no C++ compiler, an unsupported backend...: the eager path is the same math
        _compiled_stats = False
        return softmax_stats(logits)


def position_uncertainty(logits: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, V) logits -> (uncertainty under `metric`, entropy, top probability), each (B, T):
    `uncertainty` of the probabilities, from the logits in one pass (two for margin)."""
    entropy, lse, top = _softmax_stats(logits)
    p_top = (top - lse).exp()
    if metric == "entropy":
        return entropy, entropy, p_top
    if metric == "maxprob":
        return 1.0 - p_top, entropy, p_top
    second = (logits.topk(2, dim=-1).values[..., 1].float() - lse).exp()
    return 1.0 - (p_top - second), entropy, p_top


def check_parameterization(parameterization: str, settings: SamplerSettings) -> None:
    """Refuse a sampler that a parameterisation of the reverse process cannot use, naming those it can."""
    usable = PARAMETERIZATION_SAMPLERS.get(parameterization)
    if usable is None:
        raise AtatError(f"unknown parameterization '{parameterization}'",
                        f"choose one of: {', '.join(PARAMETERIZATION_SAMPLERS)}")
    if settings.sampler not in usable:
        raise AtatError(f"the {settings.sampler} sampler re-masks under MDLM's SUBS posterior and does not apply to a "
                        f"{parameterization} run",
                        f"use --sampler ancestral ({OWN_REVERSE[parameterization]}), confidence or uncertainty")


@torch.no_grad()
def sample(denoiser: Denoiser, x: torch.Tensor, mask_id: int, settings: SamplerSettings, *,
           fill: torch.Tensor | None = None, generator: torch.Generator | None = None,
           importance: Importance | None = None, schedule: NoiseSchedule | None = None,
           token_schedule=None, parameterization: str = "subs",
           record: bool = False) -> SampleOutput:
    """Fill the masked positions of x (B, T); see the module docstring. `token_schedule`: a
    per-token (diffusion/token_schedule.py) or per-position (diffusion/position_schedule.py)
    schedule, which ancestral sampling then follows. `parameterization`: how the denoiser's logits
    are read (subs, d3pm, sedd)."""
    settings.validate()
    check_parameterization(parameterization, settings)
    if parameterization != "subs" and token_schedule is not None:
        raise AtatError("a per-token schedule is an ATAT design on SUBS; it has no d3pm or sedd sampler")
    if settings.sampler == "importance" and importance is None:
        raise AtatError("the importance sampler needs an importance estimator, and this model has none",
                        "train with --method atat, or use --sampler uncertainty")
    todo = x == mask_id if fill is None else (fill & (x == mask_id))
    schedule = schedule or LogLinear()
    if settings.sampler == "ancestral":
        return _ancestral(denoiser, x.clone(), todo, mask_id, settings, generator, importance, schedule, record,
                          token_schedule, parameterization)
    if settings.sampler == "remdm":
        return _remdm(denoiser, x.clone(), todo, mask_id, settings, generator, importance, schedule, record)
    return _ordered(denoiser, x.clone(), todo, mask_id, settings, generator, importance, schedule, record)


def _record(trajectory, step, nfe, x, chosen, logits_at_chosen, tokens, imp):
    """Append one StepRecord (only called when recording, so the normal path pays nothing)."""
    confidence = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    if tokens.numel():
        probs = torch.softmax(logits_at_chosen.float(), dim=-1)
        confidence[chosen] = probs.gather(-1, tokens[:, None]).squeeze(-1)
    trajectory.append(StepRecord(step, nfe, x.to("cpu", copy=True), chosen.cpu(), confidence.cpu(),
                                 None if imp is None else imp.float().cpu()))


def _ancestral(denoiser, x, todo, mask_id, s: SamplerSettings, generator, importance, schedule, record,
               token_schedule=None, parameterization="subs"):
    B, T = x.shape
    by_position = token_schedule is not None and token_schedule.by_position
    token_exponents = token_schedule.exponents if token_schedule is not None and not by_position else None
    rate = schedule.mask_rate(time_grid(s.steps, s.grid, x.device))  # m(t_i), float64, m(t_steps) = 0
    # (B, T, V + 1) logits in the denoiser's own dtype, per row valid while the row is unchanged.
    # Never copied whole or upcast: only the positions a step reads are (the overhead issue).
    cache = None
    stale = torch.ones(B, dtype=torch.bool, device=x.device)
    nfe, row_nfe = 0, torch.zeros(B, dtype=torch.long, device=x.device)
    row_steps = torch.zeros_like(row_nfe)
    trajectory = [] if record else None
    for i in range(s.steps):
        active = todo.any(dim=1)
        if not active.any():
            break
        need = stale & active
        if need.any():
            level = rate[i].float().expand(B)
            if need.all() or getattr(denoiser, "whole_batch", False):  # a cached denoiser holds every row
                cache = denoiser(x, level)
                row_nfe += active
            else:
                cache = _rows_into(cache, denoiser(x[need], level[need]), need, B)
                row_nfe += need
            nfe += 1
        row_steps += active
        draw = torch.rand(x.shape, dtype=torch.float64, generator=generator, device=x.device)
        if parameterization != "subs":
            # D3PM's or SEDD's own reveal probability per position (from the cached logits and the
            # two masking rates); the last step reveals every position left. Tokens as under SUBS.
            m_t, m_s = float(rate[i]), float(rate[i + 1])
            if m_s <= 0.0:
                chosen = todo.clone()
            else:
                rows = cache[todo]  # (N, V + 1)
                reveal = d3pm_reveal(rows, mask_id, m_t, m_s) if parameterization == "d3pm" else \
                    sedd_reveal(rows[:, :mask_id], m_t, m_s)
                chosen = todo.clone()
                chosen[todo] = draw[todo] < reveal
            at_chosen = cache[chosen][:, :mask_id]
            tokens = sample_categorical(at_chosen, generator, s.temperature, s.top_p)
        elif token_exponents is None:
            # Reveal each masked token with probability (m(t) - m(s)) / m(t); 1 on the last step.
            # Under a per-position schedule with each position's own m_i, and 1 once m_i(s) = 0.
            if by_position:
                m_t, m_s = (token_schedule.rate_at(rate[j].float().reshape(1), T)[0] for j in (i, i + 1))
                reveal = torch.where(m_t > 0, 1 - m_s / m_t.clamp(min=1e-12), 1.0).double()
            else:
                reveal = (rate[i] - rate[i + 1]) / rate[i]
            chosen = todo & (draw < reveal)
            at_chosen = cache[chosen][:, :mask_id]
            tokens = sample_categorical(at_chosen, generator, s.temperature, s.top_p)
        else:
            # Per-token schedule: token v is revealed with probability 1 - (m(t)/m(s))^{w_v}, so a
            # masked position becomes v with probability mu_v (1 - ratio^{w_v}) and stays masked
            # otherwise (exact at temperature 1; a temperature also tempers the factor).
            ratio = (rate[i + 1] / rate[i]).float()
            log_factor = torch.log1p(-ratio ** token_exponents.float()) if ratio > 0 else torch.zeros_like(token_exponents)
            reveal = (torch.softmax(cache[todo][:, :mask_id].float(), dim=-1) * log_factor.exp()).sum(-1)  # (N,)
            chosen = todo.clone()
            chosen[todo] = draw[todo] < reveal
            at_chosen = cache[chosen][:, :mask_id].float()
            tokens = sample_categorical(at_chosen + log_factor, generator, s.temperature, s.top_p)
        x[chosen] = tokens
        todo &= ~chosen
        # Under a per-token schedule the posterior of a still-masked token moves with t even when
        # nothing was revealed (which tokens stay masked longer is informative): no caching then.
        stale = chosen.any(dim=1) if token_exponents is None else torch.ones_like(stale)
        if record:
            imp = importance(x, rate[i + 1].float().expand(B)) if importance is not None else None
            _record(trajectory, i, nfe, x, chosen, at_chosen, tokens, imp)
    return SampleOutput(x, nfe, row_nfe, row_steps, trajectory)


def _remdm(denoiser, x, region, mask_id, s: SamplerSettings, generator, importance, schedule, record):
    B = x.shape[0]
    rate = schedule.mask_rate(time_grid(s.steps, s.grid, x.device))
    todo = region.clone()  # still masked; region (the positions to fill) is all that may be re-masked
    drawn_p = torch.zeros(x.shape, dtype=torch.float32, device=x.device)  # each decoded token's p when drawn
    nfe, row_nfe = 0, torch.zeros(B, dtype=torch.long, device=x.device)
    row_steps = torch.zeros_like(row_nfe)
    trajectory = [] if record else None
    for i in range(s.steps):
        m_t, m_s = float(rate[i]), float(rate[i + 1])
        sigma_max = 1.0 if m_t >= 1.0 else min(1.0, m_s / (1.0 - m_t))
        sigma = s.eta * sigma_max if s.remask == "rescale" else min(s.eta, sigma_max)
        active = region.any(dim=1)
        row_steps += active
        decoded = region & ~todo
        if s.remask == "conf":  # the same expected re-masks per row as cap, least sure tokens first
            weight = torch.where(decoded, torch.exp(-drawn_p), 0.0)
            share = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-30)
            remask_p = (sigma * decoded.sum(dim=1, keepdim=True) * share).clamp(max=1.0)
        else:
            remask_p = torch.where(decoded, sigma, 0.0)
        draw = torch.rand(x.shape, dtype=torch.float64, generator=generator, device=x.device)
        remasked = decoded & (draw < remask_p)
        reveal = (1.0 - m_s - (1.0 - sigma) * (1.0 - m_t)) / m_t  # 1 on the last step (m_s = 0)
        chosen = todo & (draw < reveal)  # same draw: a position is either masked or decoded
        at_chosen = None
        tokens = x.new_empty(0)
        if chosen.any():
            logits = denoiser(x, rate[i].float().expand(B))
            nfe += 1
            row_nfe += todo.any(dim=1)
            at_chosen = logits[chosen][:, :mask_id].float()
            tokens = sample_categorical(at_chosen, generator, s.temperature, s.top_p)
            drawn_p[chosen] = torch.softmax(at_chosen, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        x[chosen] = tokens
        x[remasked] = mask_id
        todo = (todo & ~chosen) | remasked
        if record:
            imp = importance(x, rate[i + 1].float().expand(B)) if importance is not None else None
            _record(trajectory, i, nfe, x, chosen, at_chosen, tokens, imp)
    return SampleOutput(x, nfe, row_nfe, row_steps, trajectory)


def _rows_into(cache, fresh, rows, batch):
    """The cache with `rows` replaced by `fresh` (a new zero cache of `batch` rows when None)."""
    # contiguous(): a denoiser may return a broadcast view, which cannot be written row by row
    cache = fresh.new_zeros(batch, *fresh.shape[1:]) if cache is None else cache.contiguous()
    cache[rows] = fresh
    return cache


def _ordered(denoiser, x, todo, mask_id, s: SamplerSettings, generator, importance, schedule, record):
    B, T = x.shape
    total = todo.sum(dim=1)
    if s.adaptive is None:
        rate = schedule.mask_rate(time_grid(s.steps, s.grid, x.device))
        remaining = rate / rate[0]  # fraction of the positions to fill still masked after step i
    positions = torch.arange(T, device=x.device).expand(B, T)
    nfe, row_nfe = 0, torch.zeros(B, dtype=torch.long, device=x.device)
    row_steps = torch.zeros_like(row_nfe)
    trajectory = [] if record else None
    step = 0
    while todo.any():
        active = todo.any(dim=1)
        # The model was trained with noise level = masking rate; here that is the masked
        # fraction it actually sees (schedule-free, and exact for adaptive steps too).
        level = (x == mask_id).float().mean(dim=1)
        logits = denoiser(x, level)[..., :mask_id]
        nfe += 1
        row_nfe += active
        row_steps += active
        # Scored at every position (one fused pass; cheaper than gathering the masked ones first)
        unsure, ent, top = position_uncertainty(logits, s.metric)
        imp = None
        if s.sampler == "importance" or (record and importance is not None):
            imp = importance(x, level).float()
        if s.sampler == "confidence":
            priority = -unsure
        elif s.sampler == "uncertainty":
            priority = unsure
        else:  # uncertainty scaled to [0, 1], so that it multiplies importance on an equal footing
            priority = (unsure / math.log(logits.shape[-1]) if s.metric == "entropy" else unsure) * imp
        score = torch.where(todo, priority, float("-inf"))
        order = score.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, positions)  # rank 0 = first to reveal
        if s.adaptive is None:
            count = todo.sum(dim=1)
            target = torch.round(total * remaining[min(step + 1, s.steps)]).long()
            k = torch.minimum((count - target).clamp(min=1), count)
            chosen = todo & (rank < k[:, None])
        elif s.adaptive == "threshold":
            chosen = todo & ((top >= s.threshold) | (rank == 0))
        else:  # entropy-bound: the longest prefix (in the sampler's order) with sum - max <= gamma
            ent = torch.where(todo, ent, 0.0)
            ent_sorted, todo_sorted = ent.gather(1, order), todo.gather(1, order)
            spread = ent_sorted.cumsum(dim=1) - ent_sorted.cummax(dim=1).values
            chosen = torch.zeros_like(todo).scatter_(1, order, todo_sorted & (spread <= s.gamma))
        tokens = sample_categorical(logits[chosen], generator, s.temperature, s.top_p)
        x[chosen] = tokens
        todo &= ~chosen
        if record:
            _record(trajectory, step, nfe, x, chosen, logits[chosen], tokens, imp)
        step += 1
    return SampleOutput(x, nfe, row_nfe, row_steps, trajectory)


@torch.no_grad()
def sample_autoregressive(model_fn, prefix: torch.Tensor, n_new: int, *, seq_len: int, temperature: float = 1.0,
                          top_p: float = 1.0, generator: torch.Generator | None = None,
                          n_layers: int, record: bool = False) -> SampleOutput:
    """Left-to-right sampling with a KV cache: `model_fn(x, kv_caches) -> logits (B, T, V)`.

    prefix (B, P) starts with the BOS id. One NFE for the prompt, then one per token fed back. When
    the cache is full (the context length), the last half context is re-read instead, in one NFE."""
    B = prefix.shape[0]
    seq = prefix
    caches = [{} for _ in range(n_layers)]
    logits = model_fn(seq, caches)[:, -1]
    nfe = 1
    trajectory = [] if record else None
    for i in range(n_new):
        token = sample_categorical(logits.float(), generator, temperature, top_p)
        seq = torch.cat([seq, token[:, None]], dim=1)
        if record:
            chosen = torch.zeros(seq.shape, dtype=torch.bool, device=seq.device)
            chosen[:, -1] = True
            _record(trajectory, i, nfe, seq, chosen, logits, token, None)
        if i == n_new - 1:
            break
        if caches[0].get("len", 0) + 1 > seq_len:
            caches = [{} for _ in range(n_layers)]
            logits = model_fn(seq[:, -(seq_len // 2):], caches)[:, -1]
        else:
            logits = model_fn(token[:, None], caches)[:, -1]
        nfe += 1
    steps = torch.full((B,), n_new, dtype=torch.long, device=seq.device)
    return SampleOutput(seq, nfe, torch.full((B,), nfe, dtype=torch.long, device=seq.device), steps, trajectory)
