"""diffusion.parameterization: D3PM (absorbing, discrete time) and SEDD (absorbing, score entropy)
beside MDLM's SUBS.

  * the formulas: D3PM's per-step KL and reverse step against the x0-parameterisation built from
    transition matrices, and against MDLM's `_d3pm_loss`; SEDD's score entropy and analytic step
    against MDLM's `_sedd_parameterization`, `_score_entropy` and `_analytic_update`;
  * the bounds on a Markov source whose block NLL is known exactly, for its exact posterior (the
    tight case) and for wrong denoisers: exactly, by summing over every block and masking, and by
    Monte Carlo through `evaluate_likelihood`: never below the NLL (beyond the eps share that every
    bound here leaves unpaid, eps log V nats per token, and 4 standard errors), SUBS's
    continuous-time bound at most D3PM's with T = 1000 (MDLM Table 7), D3PM's bound falling with T;
  * the samplers: each reverse process from the exact posterior / score generates the source;
  * the CLI end to end at --size test, the ablation grid, and every bad setting.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from atat_cli.cli.app import main
from atat_cli.config import DiffusionConfig, load_config
from atat_cli.diffusion import (
    build_schedule,
    d3pm_kl,
    d3pm_reveal,
    discrete_times,
    score_entropy,
    sedd_log_score,
    sedd_reveal,
    time_of,
)
from atat_cli.errors import AtatError
from atat_cli.evaluation import evaluate_likelihood
from atat_cli.objectives import NelboTerms, build_objective
from atat_cli.objectives.base import band_metrics, masked_terms
from atat_cli.objectives.parameterisation import exact_band_metrics
from atat_cli.sampling.samplers import SamplerSettings, sample

from conftest import FAST

EPS = 1e-3

# --- the formulas ----------------------------------------------------------------------------


def _absorbing(alpha: float, V: int) -> torch.Tensor:
    """(V + 1, V + 1) q(x_t = column | x_0 = row) of absorbing diffusion, clean with prob alpha."""
    Q = alpha * torch.eye(V + 1, dtype=torch.float64)
    Q[:, V] += 1 - alpha
    Q[V, V] = 1.0
    return Q


@pytest.mark.parametrize("m_t,m_s", [(0.7, 0.4), (0.3, 0.0), (1 - EPS, 0.998), (0.05, 0.01)])
def test_d3pm_step_is_the_x0_parameterisation(m_t, m_s):
    """d3pm_kl and d3pm_reveal against D3PM's p(x_s | x_t) ~ sum_x0 q(x_s, x_t | x0) x(x0) built
    from transition matrices, for predictions that put mass on the mask."""
    V, N = 5, 64
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, V + 1, generator=g, dtype=torch.float64) * 2
    x0 = torch.randint(0, V, (N,), generator=g)
    x = torch.softmax(logits, -1)  # (N, V + 1)
    q_s = _absorbing(1 - m_s, V)  # q(x_s | x0)
    step = _absorbing((1 - m_t) / (1 - m_s), V)  # q(x_t | x_s)
    joint = q_s * step[:, V][None, :]  # q(x_s, x_t = mask | x0): rows x0, columns x_s
    model = x @ joint
    model = model / model.sum(-1, keepdim=True)  # p(x_s | x_t = mask)
    truth = joint[x0] / joint[x0].sum(-1, keepdim=True)  # q(x_s | x_t = mask, x0)
    kl = (torch.special.xlogy(truth, truth) - torch.special.xlogy(truth, model)).sum(-1)
    mt, ms = torch.full((N,), m_t, dtype=torch.float64), torch.full((N,), m_s, dtype=torch.float64)
    assert torch.allclose(d3pm_kl(logits, x0, V, mt, ms).double(), kl, atol=2e-5)
    reveal = d3pm_reveal(logits, V, m_t, m_s).double()
    assert torch.allclose(reveal, 1 - model[:, V], atol=1e-5)
    # given a reveal, the token follows x over the vocabulary
    assert torch.allclose(model[:, :V] / reveal[:, None], torch.softmax(logits[:, :V], -1), atol=1e-4)


def test_d3pm_kl_is_mdlms_d3pm_loss():
    """MDLM's `_d3pm_loss` (diffusion.py), transcribed: alpha_t = 1 - t, dt = 1 / T."""
    V, T, N = 7, 10, 50
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(N, V + 1, generator=g)
    x0 = torch.randint(0, V, (N,), generator=g)
    t = torch.randint(2, T + 1, (N,), generator=g) / T
    dt = 1 / T
    out = torch.log_softmax(logits, -1)  # _d3pm_parameterization without subs_masking
    alpha_t, alpha_s = 1 - t, 1 - (t - dt)
    x_m = out[:, V].exp()
    term_1 = dt / t * (torch.log(alpha_t * x_m / t + 1) - out.gather(-1, x0[:, None])[:, 0])
    term_2 = (1 - dt / t) * (torch.log(alpha_t * x_m / t + 1) - torch.log(alpha_s * x_m / (t - dt) + 1))
    assert torch.allclose(d3pm_kl(logits, x0, V, t, t - dt), term_1 + term_2, atol=1e-5)


def test_discrete_times_cover_the_steps_uniformly():
    u = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    t, s = discrete_times(u, 8)
    assert torch.equal(torch.bincount((t * 8).round().long()), torch.tensor([0] + [500] * 8))
    assert torch.allclose(t - s, torch.full_like(t, 1 / 8)) and float(s.min()) == 0.0
    assert float(discrete_times(torch.tensor([0.9999999]), 1000)[0]) == 1.0


def test_score_entropy_is_mdlms_sedd_loss():
    """MDLM's `_sedd_parameterization` and `_score_entropy` times dsigma (loglinear), transcribed;
    it equals w(t) [S - 1 - log S] above SUBS's term for the same logits."""
    V, N = 9, 40
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(N, V + 1, generator=g, dtype=torch.float64) * 3
    x0 = torch.randint(0, V, (N,), generator=g)
    t = time_of(torch.rand(N, generator=g, dtype=torch.float64), EPS)
    sigma = -torch.log1p(-(1 - EPS) * t)
    dsigma = (1 - EPS) / (1 - (1 - EPS) * t)
    log_score = logits - torch.expm1(sigma).log()[:, None] - math.log(V)  # x_t (the mask) entry unused
    q_ratio = 1 / torch.expm1(sigma)
    neg = q_ratio * log_score.gather(-1, x0[:, None])[:, 0]
    pos = log_score[:, :V].exp().sum(-1)
    const = q_ratio * (q_ratio.log() - 1)
    reference = dsigma * (pos - neg + const)
    rate = 1 - torch.exp(-sigma)
    weight = build_schedule("loglinear", EPS).loss_weight(t)
    assert torch.allclose(sedd_log_score(logits[:, :V], rate).double(), log_score[:, :V], atol=1e-4)
    ours = score_entropy(logits[:, :V], x0, weight).double()
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4)
    S = (logits[:, :V].exp().sum(-1) / V)
    subs = weight * torch.nn.functional.cross_entropy(logits[:, :V], x0, reduction="none")
    assert torch.allclose(ours, subs + weight * (S - 1 - S.log()), rtol=1e-4, atol=1e-4)
    assert torch.all(ours >= subs - 1e-6)


@pytest.mark.parametrize("m_t,m_s", [(0.8, 0.5), (0.2, 0.19)])
def test_sedd_reveal_is_the_analytic_step(m_t, m_s):
    """MDLM's `_analytic_update` (staggered score times transposed transition, SEDD's
    AnalyticPredictor) at a masked position, transcribed, against sedd_reveal and a token from
    softmax(logits); where its mask entry goes negative the reference never stays masked."""
    V, N = 6, 100
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(N, V + 1, generator=g, dtype=torch.float64) + torch.linspace(-2, 2, N, dtype=torch.float64)[:, None]
    sigma_t, sigma_s = -math.log(1 - m_t), -math.log(1 - m_s)
    dsigma = sigma_t - sigma_s
    log_score = logits - math.log(math.expm1(sigma_t)) - math.log(V)
    log_score[:, V] = 0.0  # the scatter at x_t = mask
    score = log_score.exp()
    stag = score * math.exp(dsigma)
    stag[:, V] += (1 - math.exp(dsigma)) * score.sum(-1)
    transp = torch.full((N, V + 1), 1 - math.exp(-dsigma), dtype=torch.float64)
    transp[:, V] = 1.0
    probs = (stag * transp).clamp(min=0)  # the reference's Gumbel argmax never draws a negative entry
    probs = probs / probs.sum(-1, keepdim=True)
    reveal = sedd_reveal(logits[:, :V], m_t, m_s).double()
    assert torch.allclose(reveal, 1 - probs[:, V], atol=1e-5)
    assert (reveal == 1).any() and (reveal < 1).any()  # both regimes are exercised
    assert torch.allclose(probs[:, :V] / reveal[:, None], torch.softmax(logits[:, :V], -1), atol=1e-5)


def test_exact_band_metrics_match_band_metrics_for_subs():
    """The band diagnostics of D3PM and SEDD (autograd on their terms) reduce to SUBS's formula."""
    V, B, T = 11, 6, 10
    g = torch.Generator().manual_seed(4)
    x0 = torch.randint(0, V, (B, T), generator=g)
    masked = torch.rand(B, T, generator=g) < 0.6
    t = torch.tensor([0.1, 0.2, 0.4, 0.5, 0.8, 0.95])
    schedule = build_schedule("loglinear", EPS)
    logits = torch.randn(int(masked.sum()), V, generator=g)
    nll, terms = masked_terms(logits, x0, masked, t, schedule, V)
    rate, weight = schedule.mask_rate(t), schedule.loss_weight(t)
    reference = band_metrics(logits, x0, masked, terms, rate, weight)
    w_rows = weight[masked.nonzero(as_tuple=True)[0]]
    ours = exact_band_metrics(lambda z: w_rows * torch.nn.functional.cross_entropy(z, x0[masked], reduction="none"),
                              NelboTerms(logits, masked, nll, terms, x0), rate)
    for key, value in reference.items():
        assert torch.allclose(ours[key], value, rtol=1e-4, equal_nan=True), key


# --- the bounds on a source with a known NLL -------------------------------------------------

V, L = 3, 6  # a Markov chain over 3 tokens, blocks of 6
TRANSITIONS = torch.tensor([[0.70, 0.25, 0.05], [0.10, 0.15, 0.75], [0.50, 0.05, 0.45]], dtype=torch.float64)
_w, _vecs = torch.linalg.eig(TRANSITIONS.T)
STATIONARY = _vecs[:, _w.real.argmax()].real
STATIONARY = STATIONARY / STATIONARY.sum()
SLACK = EPS * math.log(V)  # nats/token: the eps share of tokens no bound here pays for


def block_log_prob(x0: torch.Tensor) -> torch.Tensor:
    """log p(block) (B,) under the stationary chain."""
    return STATIONARY.log()[x0[:, 0]] + TRANSITIONS.log()[x0[:, :-1], x0[:, 1:]].sum(1)


def markov_posterior(x_t: torch.Tensor) -> torch.Tensor:
    """p(x0_j = v | the unmasked tokens of x_t) (B, L, V) by the forward-backward recursions
    (a loop over the L positions; one-hot at unmasked positions)."""
    observed = torch.nn.functional.one_hot(x_t.clamp(max=V - 1), V).double()
    evidence = torch.where((x_t == V)[..., None], torch.ones_like(observed), observed)  # (B, L, V)
    forward = [STATIONARY * evidence[:, 0]]
    for j in range(1, x_t.shape[1]):
        forward.append((forward[-1] @ TRANSITIONS) * evidence[:, j])
    backward = [torch.ones_like(forward[0])]
    for j in range(x_t.shape[1] - 2, -1, -1):
        backward.insert(0, (evidence[:, j + 1] * backward[0]) @ TRANSITIONS.T)
    post = torch.stack(forward, 1) * torch.stack(backward, 1)
    return post / post.sum(-1, keepdim=True)


class MarkovDenoiser(torch.nn.Module):
    """A denoiser over the Markov source: logits (B, L, V + 1) or rows (N, V) at `at`.

    exact: the exact posterior (else the stationary law at every position, ignoring context);
    offset: added to the vocabulary's logits (log V makes SEDD's scores exact: mu = posterior;
    SUBS is unchanged by it); mask_mass: y, D3PM's prediction of the mask (0: a -inf logit)."""

    def __init__(self, exact=True, offset=math.log(V), mask_mass=0.0):
        super().__init__()
        self.exact, self.offset, self.mask_mass = exact, offset, mask_mass

    def forward(self, x_t, level, at=None):
        post = markov_posterior(x_t) if self.exact else STATIONARY.expand(*x_t.shape, V)
        vocab = (post * (1 - self.mask_mass)).clamp_min(1e-300).log() + self.offset
        mask = torch.full_like(vocab[..., :1], math.log(self.mask_mass) if self.mask_mass else -math.inf)
        logits = torch.cat([vocab, mask + self.offset], dim=-1)
        return logits[at][:, :V] if at is not None else logits


ALL_BLOCKS = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (V^L, L)


def _all_blocks_and_maskings():
    masks = torch.tensor(list(itertools.product([False, True], repeat=L)))
    X, M = ALL_BLOCKS.repeat_interleave(len(masks), 0), masks.repeat(len(ALL_BLOCKS), 1)
    weight = block_log_prob(X).exp()
    return X, M, weight


def _masked_nll_by_count(denoiser) -> torch.Tensor:
    """C_k = sum over blocks x0 and maskings M with |M| = k of p(x0) sum_{j in M} -log p(x0_j | x_t)."""
    X, M, weight = _all_blocks_and_maskings()
    x_t = torch.where(M, V, X)
    log_p = torch.log_softmax(denoiser(x_t, None)[..., :V].double(), -1).gather(-1, X[..., None])[..., 0]
    per_row = (-log_p * M).sum(1)
    return torch.zeros(L + 1, dtype=torch.float64).index_add_(0, M.sum(1), weight * per_row)


def _expected_masked_nll(C, m):
    """E over blocks and maskings at rate m (n,) of sum_{masked} -log p: (n,)."""
    k = torch.arange(L + 1)
    return (m[:, None] ** k * (1 - m[:, None]) ** (L - k) * C).sum(1)


SCHEDULE = build_schedule("loglinear", EPS)
EXACT_NLL = float(-(block_log_prob(ALL_BLOCKS).exp() * block_log_prob(ALL_BLOCKS)).sum()) / L  # nats/token


def exact_subs(C, n=20_000) -> float:
    """SUBS's bound per token, E_u[w(t) E[sum masked nll]] / L, t = (1 - eps) u + eps, by midpoints."""
    t = time_of((torch.arange(n, dtype=torch.float64) + 0.5) / n, EPS)
    return float((SCHEDULE.loss_weight(t) * _expected_masked_nll(C, SCHEDULE.mask_rate(t))).mean()) / L


def exact_d3pm(C, steps) -> float:
    """D3PM's bound per token for a denoiser with no mass on the mask: sum_i a_i E[...] / L."""
    i = torch.arange(1, steps + 1, dtype=torch.float64)
    m_t, m_s = SCHEDULE.mask_rate(i / steps), SCHEDULE.mask_rate((i - 1) / steps)
    return float(((m_t - m_s) / m_t * _expected_masked_nll(C, m_t)).sum()) / L


def test_exact_bounds_are_never_below_the_nll_and_tight_for_the_posterior():
    """Summed over every block and masking: SUBS (and SEDD with exact scores, the same number) is
    the NLL for the exact posterior up to the eps share; D3PM's bound falls with T towards it and
    is above SUBS's at T = 1000 (MDLM Table 7's ordering); the context-free denoiser is above both."""
    exact = _masked_nll_by_count(MarkovDenoiser())
    subs = exact_subs(exact)
    assert abs(subs - EXACT_NLL) < SLACK, (subs, EXACT_NLL)
    d3pm = {T: exact_d3pm(exact, T) for T in (1, 2, 4, 10, 100, 1000)}
    values = list(d3pm.values())
    assert all(a > b for a, b in zip(values, values[1:])), d3pm  # a finer grid is a tighter bound
    assert all(v >= EXACT_NLL - SLACK for v in values)
    assert 0 <= d3pm[1000] - subs < 1e-4 and d3pm[4] - subs > 0.04, (d3pm, subs)
    marginal = _masked_nll_by_count(MarkovDenoiser(exact=False))
    assert exact_subs(marginal) > EXACT_NLL + 0.05 and exact_d3pm(marginal, 1000) > EXACT_NLL + 0.05


def _sample_blocks(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = [torch.multinomial(STATIONARY, n, replacement=True, generator=g)]
    for _ in range(L - 1):
        x.append(torch.multinomial(TRANSITIONS[x[-1]], 1, generator=g)[:, 0])
    return torch.stack(x, 1)


def _bound(denoiser, blocks, parameterization, steps=0, mc=16):
    """Per-block (bound - exact NLL) in nats/token through evaluate_likelihood: mean, standard error."""
    cfg = DiffusionConfig(parameterization=parameterization, steps=steps)
    raw = evaluate_likelihood(denoiser, blocks.numpy(), method="mdlm", diffusion_cfg=cfg, mask_id=V, mc=mc,
                              batch_size=len(blocks), seed=0)
    assert raw["parameterization"] == parameterization
    gap = (torch.from_numpy(raw["per_block_nats"]) + block_log_prob(blocks)) / L
    return float(gap.mean()), float(gap.std() / math.sqrt(len(gap)))


BLOCKS = _sample_blocks(3000, seed=5)


@pytest.mark.parametrize("parameterization,steps", [("subs", 0), ("d3pm", 1000), ("d3pm", 4), ("sedd", 0)])
@pytest.mark.parametrize("denoiser", [MarkovDenoiser(), MarkovDenoiser(exact=False), MarkovDenoiser(mask_mass=0.2),
                                      MarkovDenoiser(offset=math.log(V) + 0.7)],
                         ids=["posterior", "context-free", "mask-mass", "scores-too-large"])
def test_monte_carlo_bound_is_never_below_the_nll(parameterization, steps, denoiser):
    """Each bound, as `atat eval` computes it, per block minus that block's exact NLL: never below
    0 beyond 4 standard errors and the eps share; for the exact posterior, also at most the exact
    bound's excess (where it is known) within the same error."""
    gap, se = _bound(denoiser, BLOCKS, parameterization, steps)
    assert gap >= -SLACK - 4 * se, (gap, se)
    if denoiser.exact and denoiser.mask_mass == 0 and denoiser.offset == math.log(V):
        expected = {"subs": 0.0, "sedd": 0.0, "d3pm": exact_d3pm(_masked_nll_by_count(denoiser), steps) - EXACT_NLL}
        assert abs(gap - expected[parameterization]) < SLACK + 4 * se, (gap, expected, se)


def test_subs_is_at_most_d3pm_on_the_same_model():
    """MDLM's Table 7 ordering on one fixed model (the exact posterior of the Markov source):
    SUBS's continuous-time bound <= D3PM's with T = 1000 within Monte Carlo error, and the
    ordering has teeth (T = 4 is above beyond it); SEDD's bound is SUBS's plus a penalty >= 0 on
    the same draws (same seed: the same times and maskings)."""
    model = MarkovDenoiser()
    subs, se_subs = _bound(model, BLOCKS, "subs", mc=16)
    d3pm, se_d3pm = _bound(model, BLOCKS, "d3pm", 1000, mc=16)
    coarse, se_coarse = _bound(model, BLOCKS, "d3pm", 4, mc=16)  # exactly 0.045 nats/token above SUBS
    assert subs <= d3pm + 4 * math.hypot(se_subs, se_d3pm), (subs, d3pm)
    assert coarse > subs + 4 * math.hypot(se_subs, se_coarse), (subs, coarse)
    off = MarkovDenoiser(offset=math.log(V) + 0.7)  # scores that sum to 2x the true ratio
    cfg = {p: DiffusionConfig(parameterization=p) for p in ("subs", "sedd")}
    nats = {p: evaluate_likelihood(off, BLOCKS[:500].numpy(), method="mdlm", diffusion_cfg=c, mask_id=V, mc=2,
                                   batch_size=500, seed=3)["per_block_nats"] for p, c in cfg.items()}
    S = math.exp(0.7)
    assert (nats["sedd"] >= nats["subs"] - 1e-6).all()
    # the penalty is w(t) (S - 1 - log S) per masked token: (1 - eps) (S - 1 - log S) per token on average
    penalty = float((nats["sedd"] - nats["subs"]).mean()) / L
    assert penalty == pytest.approx((1 - EPS) * (S - 1 - math.log(S)), rel=0.1)


@pytest.mark.parametrize("parameterization", ["d3pm", "sedd"])
def test_training_loss_estimates_the_bound_eval_reports(parameterization):
    """The objective's loss on a fixed model has the mean of the bound `atat eval` computes."""
    steps = 10 if parameterization == "d3pm" else 0
    cfg = load_config("test", "mdlm", overrides=[f"diffusion.parameterization={parameterization}",
                                                 f"diffusion.steps={steps}", "train.precision=fp32"])
    objective = build_objective(cfg, V, 0)
    model = MarkovDenoiser(exact=False, mask_mass=0.1)
    g = torch.Generator().manual_seed(0)
    x0 = BLOCKS[:256]
    draws = torch.stack([objective.loss(model, x0, g, diagnostics=k == 0)[0] for k in range(200)]).double()
    loss, metrics = objective.loss(model, x0, g)
    assert {"loss_low", "grad_low", "loss_high", "grad_high"} <= set(metrics)
    assert all(math.isfinite(float(metrics[k])) for k in ("grad_mid", "grad_high"))
    raw = evaluate_likelihood(model, x0.numpy(), method="mdlm", diffusion_cfg=cfg.diffusion, mask_id=V, mc=64,
                              batch_size=256, seed=1)
    reported = float(raw["per_block_nats"].sum()) / x0.numel()
    se = float(draws.std() / math.sqrt(len(draws)))
    assert abs(float(draws.mean()) - reported) < 4 * se + 0.01, (float(draws.mean()), reported, se)


# --- the samplers ----------------------------------------------------------------------------

P_IID = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05], dtype=torch.float64)


def _iid_denoiser(mask_mass=0.0, scale=1.0):
    """The exact posterior of an i.i.d. source P at every position, as logits (B, T, V + 1): the
    vocabulary's part log(scale (1 - y) P) + log V (SEDD's scores then sum to scale times the true
    ratio), the mask's log y + log V."""
    n = len(P_IID)

    def denoiser(x, level):
        vocab = (scale * (1 - mask_mass) * P_IID).log() + math.log(n)
        mask = math.log(mask_mass) + math.log(n) if mask_mass else -1e9
        row = torch.cat([vocab, torch.tensor([mask], dtype=torch.float64)]).float()
        return row.expand(*x.shape, n + 1)

    return denoiser


def _masked_after_each_step(out, mask_id):
    return torch.tensor([float((r.tokens == mask_id).float().mean()) for r in out.trajectory], dtype=torch.float64)


@pytest.mark.parametrize("parameterization,mask_mass,scale", [("d3pm", 0.0, 1.0), ("d3pm", 0.3, 1.0),
                                                              ("sedd", 0.0, 1.0), ("sedd", 0.0, 1.6)])
def test_each_reverse_process_generates_the_source(parameterization, mask_mass, scale):
    """From the exact posterior (D3PM, also with mass y on the mask) or the exact score (SEDD, also
    scaled), ancestral sampling generates P, and the share still masked after each step follows
    the process's own reverse step: D3PM (m(t) + y alpha(t)) / Z(1) with Z = m + y alpha (the
    per-step stay probabilities telescope), SEDD prod (1 - min(1, scale (m_t - m_s) / m_t))."""
    n = len(P_IID)
    x = torch.full((4000, 8), n)
    steps = 16
    settings = SamplerSettings(steps=steps)
    out = sample(_iid_denoiser(mask_mass, scale), x, n, settings, generator=torch.Generator().manual_seed(0),
                 parameterization=parameterization, record=True)
    tokens = out.tokens
    assert (tokens < n).all()
    freq = torch.bincount(tokens.flatten(), minlength=n).double() / tokens.numel()
    se = (P_IID * (1 - P_IID) / tokens.numel()).sqrt()
    assert ((freq - P_IID).abs() < 5 * se + 2e-3).all(), freq
    rate = SCHEDULE.mask_rate(torch.linspace(1, 0, steps + 1, dtype=torch.float64))
    if parameterization == "d3pm":
        z = rate + mask_mass * (1 - rate)
        expected = z[1:] / z[0]
    else:
        expected = torch.cumprod(1 - (scale * (rate[:-1] - rate[1:]) / rate[:-1]).clamp(max=1), 0)
    expected[-1] = 0.0  # the last step reveals every position left
    seen = _masked_after_each_step(out, n)
    assert torch.allclose(seen, expected, atol=0.01), (seen, expected)
    if mask_mass or scale != 1:  # and it is not MDLM's schedule of reveals
        assert (seen[:-1] - rate[1:-1] / rate[0]).abs().max() > 0.05


def test_ordered_samplers_read_the_normalised_scores():
    """The ordered samplers apply to D3PM and SEDD through the softmax over the vocabulary."""
    n = len(P_IID)
    x = torch.full((2000, 4), n)
    for p in ("d3pm", "sedd"):
        out = sample(_iid_denoiser(0.2, 1.6), x, n, SamplerSettings(sampler="uncertainty", steps=4),
                     generator=torch.Generator().manual_seed(1), parameterization=p)
        freq = torch.bincount(out.tokens.flatten(), minlength=n).double() / out.tokens.numel()
        assert ((freq - P_IID).abs() < 0.02).all(), freq


@pytest.mark.parametrize("parameterization", ["d3pm", "sedd"])
def test_remdm_is_refused_naming_the_samplers_that_apply(parameterization):
    n = len(P_IID)
    with pytest.raises(AtatError, match=f"remdm sampler .* does not apply to a {parameterization} run") as e:
        sample(_iid_denoiser(), torch.full((2, 4), n), n, SamplerSettings(sampler="remdm"),
               parameterization=parameterization)
    assert "ancestral" in e.value.hint and "confidence" in e.value.hint


# --- the command line ------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SETTINGS = {"d3pm": ["diffusion.parameterization=d3pm", "diffusion.steps=1000"],
            "sedd": ["diffusion.parameterization=sedd"]}


@pytest.mark.parametrize("parameterization", ["d3pm", "sedd"])
def test_train_eval_sample_gif(atat_home, capsys, parameterization):
    run_dir = atat_home / "runs" / parameterization
    args = ["train", "--size", "test", "--max-steps", "4", "--json", "--no-sample", "--out", str(run_dir)]
    for item in FAST + SETTINGS[parameterization]:
        args += ["--set", item]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["nelbo"]) for r in records if "nelbo" in r)
    code, out, err = run(capsys, "eval", str(run_dir), "--json", "--mc", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["parameterization"] == parameterization
    assert result["diffusion_steps"] == (1000 if parameterization == "d3pm" else None)
    assert 0 < result["nelbo"] < 2 * math.log(257) and math.isfinite(result["nelbo_stderr"])
    code, out, err = run(capsys, "eval", str(run_dir), "--mc", "1")  # the table names the run's own bound
    assert code == 0, err
    assert ("D3PM discrete-time NELBO, T = 1000" if parameterization == "d3pm" else "SEDD score-entropy NELBO") in out
    code, out, err = run(capsys, "sample", str(run_dir), "--length", "12", "--steps", "6", "--json", "--seed", "0")
    assert code == 0, err
    assert json.loads(out)["samples"][0]["steps"] == 6
    code, out, err = run(capsys, "sample", str(run_dir), "--length", "12", "--sampler", "confidence", "--adaptive",
                         "threshold", "--json")
    assert code == 0, err
    code, _, err = run(capsys, "gif", str(run_dir), "--length", "12", "--steps", "6", "--out", str(atat_home / "d.gif"))
    assert code == 0, err
    assert (atat_home / "d.gif").stat().st_size > 0
    code, _, err = run(capsys, "sample", str(run_dir), "--sampler", "remdm")
    assert code == 1 and f"does not apply to a {parameterization} run" in err and "Traceback" not in err


def test_parameterisation_grid_trains_each_at_equal_tokens(atat_home, capsys):
    from atat_cli.ablation import load_grid

    grid = load_grid("parameterisation")
    assert grid.baseline == "subs" and [v.name for v in grid.variants] == ["subs", "d3pm", "sedd"]
    resolved = {v.name: v.resolve("screen", []).diffusion for v in grid.variants}
    assert resolved["d3pm"].steps == 1000 and resolved["sedd"].parameterization == "sedd"
    out = atat_home / "abl"
    code, stdout, err = run(capsys, "ablate", "--grid", "parameterisation", "--out", str(out), "--json", "--size", "test",
                            "--data", "tinytext", "--tokens", "512", "--seeds", "1", "--mc", "1",
                            "--set", "train.precision=fp32", "--set", "train.batch_size=4", "--set", "train.eval_batches=1")
    assert code == 0, err
    report = json.loads(stdout)
    assert {r["variant"] for r in report["rows"]} == {"subs", "d3pm", "sedd"}
    assert all(r["tokens"] == 512 for r in report["runs"])


BAD = [
    (["diffusion.parameterization=bogus"], "mdlm", "unknown diffusion.parameterization 'bogus'"),
    (["diffusion.parameterization=d3pm"], "mdlm", r"d3pm is discrete time: diffusion.steps must be at least 1 \(got 0\)"),
    (["diffusion.parameterization=d3pm", "diffusion.steps=-3"], "mdlm", r"at least 1 \(got -3\)"),
    (["diffusion.parameterization=d3pm", "diffusion.steps=2.5"], "mdlm", "'diffusion.steps' expects int"),
    (["diffusion.parameterization=sedd", "diffusion.steps=100"], "mdlm", "sedd is continuous time"),
    (["diffusion.steps=1000"], "mdlm", "subs is continuous time"),
    (["diffusion.parameterization=sedd"], "atat", "is for --method mdlm; ATAT's designs"),
    (["diffusion.parameterization=d3pm", "diffusion.steps=10"], "ar", "is for --method mdlm; the AR baseline"),
]


@pytest.mark.parametrize("overrides,method,message", BAD)
def test_bad_settings(overrides, method, message):
    with pytest.raises(AtatError, match=message):
        load_config("test", method, overrides=overrides)


def test_bad_setting_is_one_line_on_the_command_line(atat_home, capsys):
    code, out, err = run(capsys, "train", "--size", "test", "--max-steps", "1", "--set", "diffusion.parameterization=d3pm")
    assert code == 1 and out == ""
    assert err.startswith("Error: diffusion.parameterization=d3pm is discrete time") and "diffusion.steps=1000" in err


def test_sampling_grid_keeps_only_the_samplers_a_parameterisation_can_use():
    from atat_cli.ablation.sampling_grid import load_sampling_grid
    from atat_cli.sampling.samplers import PARAMETERIZATION_SAMPLERS

    full = load_sampling_grid("sampling", has_importance=True)
    sedd = load_sampling_grid("sampling", has_importance=True, usable=PARAMETERIZATION_SAMPLERS["sedd"])
    assert any(s.sampler == "remdm" for s in full.values())
    assert sedd and all(s.sampler != "remdm" for s in sedd.values())
    assert set(sedd) == {k for k, s in full.items() if s.sampler != "remdm"}
