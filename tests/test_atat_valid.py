"""The defining property of each valid ATAT design.

Kind 1 (adaptive time, adaptive tokens): on a fixed model, the training loss's expectation is the
uniform-masking NELBO, MDLM's, within Monte Carlo error (stated in each assert).
Kind 2 (per-token schedule): the bound is never below the exact NLL of a source whose entropy is
known, and is tight for the exact posterior.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atat_cli.atat import TimeProposal, keep_probabilities
from atat_cli.config import TimeConfig, load_config
from atat_cli.diffusion import TokenSchedule, build_schedule, frequency_exponents, time_of
from atat_cli.errors import AtatError
from atat_cli.models import build_model
from atat_cli.objectives import build_objective, nelbo_terms

V, T = 12, 16


def _cfg(preset, *overrides):
    return load_config("test", "atat", config_file=preset, overrides=["train.precision=fp32", *overrides])


def _skewed_proposal(bins=8) -> TimeProposal:
    proposal = TimeProposal(TimeConfig(bins=bins, uniform_mix=0.1))
    proposal.mean_sq = torch.linspace(0.1, 5.0, bins, dtype=torch.float64) ** 2
    proposal.seen[:] = 100
    return proposal


def _bell_proposal(bins=8) -> TimeProposal:
    return TimeProposal(TimeConfig(proposal="bell", bins=bins, uniform_mix=0.1, center=0.5, width=0.2))


@pytest.mark.parametrize("make", [_skewed_proposal, _bell_proposal], ids=["adaptive", "bell"])
def test_time_proposal_weights_integrate_any_function_exactly(make):
    # E_pi[f(u) / (K pi(u))] = integral of f over [0, 1): on a fine stratified grid of v it is a
    # Riemann sum, so a smooth f is integrated to ~1e-6.
    proposal = make()
    p = proposal.probabilities()
    assert abs(float(p.sum()) - 1) < 1e-12 and float(p.max() / p.min()) > 5  # really non-uniform
    n = 200_000
    g = torch.Generator().manual_seed(0)
    u, weight, k = proposal.sample(n, True, g, "cpu")
    assert u.min() >= 0 and u.max() < 1 and torch.equal(k, (u * 8).long().clamp(max=7))
    for f, exact in ((lambda x: x, 0.5), (lambda x: torch.exp(-3 * x), (1 - math.exp(-3)) / 3)):
        assert abs(float((f(u.double()) * weight).mean()) - exact) < 1e-4
    assert float(weight.max()) <= 1 / 0.1 + 1e-4  # the uniform share bounds every weight
    if proposal.learns:  # more samples fall where the loss is larger
        assert (k == 7).sum() > 3 * (k == 0).sum()


def test_bell_proposal_peaks_at_its_center_and_never_learns():
    proposal = TimeProposal(TimeConfig(proposal="bell", bins=10, uniform_mix=0.1, center=0.3, width=0.1))
    p = proposal.probabilities()
    assert int(p.argmax()) in (2, 3) and torch.all(p >= 0.1 / 10 - 1e-12)
    assert float(p[2:4].sum()) > 0.5  # most of the mass within one width of the center
    proposal.observe(torch.arange(10), torch.linspace(10, 1, 10))
    assert torch.equal(proposal.probabilities(), p)


def test_time_proposal_learns_from_loss_and_starts_uniform():
    proposal = TimeProposal(TimeConfig(bins=4))
    assert torch.allclose(proposal.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    u, weight, k = proposal.sample(64, True, g, "cpu")
    assert torch.allclose(weight, torch.ones(64)) and torch.allclose(u, (torch.arange(64) + u * 64 % 1) / 64, atol=1e-5)
    for _ in range(10):  # bin 3 has a 4x larger loss
        proposal.observe(torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 4.0]))
    p = proposal.probabilities()
    assert p[3] > 2.5 * p[0] and abs(float(p.sum()) - 1) < 1e-12
    restored = TimeProposal(TimeConfig(bins=4))
    restored.load_state_dict(proposal.state_dict())
    assert torch.equal(restored.probabilities(), p)


def _observe_on_rank(rank, world, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    proposal = TimeProposal(TimeConfig(bins=4))
    for step in range(MIN_SEEN_STEPS):  # rank 0 sees a large loss in bin 3, rank 1 in bin 0
        loss = torch.tensor([1.0, 1.0, 1.0, 4.0]) if rank == 0 else torch.tensor([3.0, 1.0, 1.0, 1.0])
        proposal.observe(torch.arange(4), loss + step)
    torch.save(proposal.state_dict(), f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


MIN_SEEN_STEPS = 10


def test_time_proposal_is_one_proposal_across_ranks(tmp_path):
    """Under DDP every rank folds in every rank's draws: the ranks keep identical proposals, the
    one a single process would learn from both batches."""
    torch.multiprocessing.spawn(_observe_on_rank, args=(2, tmp_path / "init", tmp_path), nprocs=2)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert states[0] == states[1]
    single = TimeProposal(TimeConfig(bins=4))
    for step in range(MIN_SEEN_STEPS):
        single.observe(torch.arange(4).repeat(2), torch.tensor([1.0, 1.0, 1.0, 4.0, 3.0, 1.0, 1.0, 1.0]) + step)
    assert torch.allclose(torch.tensor(states[0]["mean_sq"], dtype=torch.float64), single.mean_sq)
    assert states[0]["seen"] == [2.0 * MIN_SEEN_STEPS] * 4


def test_grad_signal_is_the_norm_of_each_sequences_logit_gradient():
    from atat_cli.objectives.base import masked_terms

    cfg = _cfg("atat/time_grad")
    objective = build_objective(cfg, V, 0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (4, T), generator=g)
    scored = torch.rand(4, T, generator=g) < 0.5
    t = torch.tensor([0.2, 0.4, 0.6, 0.9])
    logits = torch.randn(int(scored.sum()), V, generator=g, requires_grad=True)
    q = torch.rand(4, T, generator=g) * 0.5 + 0.5
    _, terms = masked_terms(logits, x0, scored, t, objective.schedule, V)
    terms = torch.where(scored, terms / q, terms)
    nll, _ = masked_terms(logits.detach(), x0, scored, t, objective.schedule, V)
    signal = objective.proposal_signal(logits.detach(), x0, scored, t, q, terms.detach(), nll)
    bound = build_objective(_cfg("atat/time_grad_bound"), V, 0).proposal_signal(None, x0, scored, t, q, terms.detach(), nll)
    sequence = scored.nonzero(as_tuple=True)[0]
    for b in range(4):  # autograd: the gradient of sequence b's mean-over-tokens loss
        (grad,) = torch.autograd.grad(terms[b].mean(), logits, retain_graph=True)
        assert torch.allclose(signal[b], grad[sequence == b].norm(), rtol=1e-4)
        # the cheap signal: a lower bound within a factor sqrt(2) of the norm
        assert signal[b] / math.sqrt(2) * (1 - 1e-5) <= bound[b] <= signal[b] * (1 + 1e-5)


def test_keep_probabilities_follow_prediction_and_stay_bounded():
    predicted = torch.tensor([[0.1, 0.9, 0.5, 0.0]])
    masked = torch.tensor([[True, True, True, False]])
    q = keep_probabilities(predicted, masked, keep=0.5, floor=0.25)
    assert q[0, 1] > q[0, 2] > q[0, 0] >= 0.5 * 0.25
    assert float(q.max()) <= 1.0


def _loss_samples(objective, model, x0, draws, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.stack([objective.loss(model, x0, g, diagnostics=False)[1]["nelbo"] for _ in range(draws)]).double()


@pytest.mark.parametrize("preset,extra", [("atat/time", []), ("atat/time_grad", []), ("atat/time_grad_bound", []), ("atat/time_bell", []),
                                          ("atat/tokens", []), ("atat/time_grad_bound", ["model.block_size=4"])],
                         ids=lambda v: v if isinstance(v, str) else "+".join(v) or "-")
def test_kind1_estimate_has_mdlm_expectation(preset, extra):
    """Same fixed model and batch: the design's loss estimates and MDLM's have the same mean (on
    a block-causal denoiser: the mean of MDLM's objective on it, its blockwise NELBO)."""
    torch.manual_seed(0)
    cfg = _cfg(preset, "atat.importance.loss_weight=0", *extra)
    model = build_model(cfg, V).eval()
    for p in model.estimator.parameters():  # a non-trivial, fixed estimator
        torch.nn.init.normal_(p, std=0.3)
    for p in model.denoiser.parameters():  # and a denoiser whose predictions depend on what it sees
        torch.nn.init.normal_(p, std=0.2)
    x0 = torch.randint(0, V, (8, T), generator=torch.Generator().manual_seed(1))
    design = build_objective(cfg, V, 0)
    if design.time is not None and design.time.learns:
        design.time = _skewed_proposal(cfg.atat.time.bins)
        design.time.observe = lambda *a: None  # hold the proposal fixed while sampling
    mdlm = build_objective(load_config("test", "mdlm", overrides=["train.precision=fp32"]), V, 0)
    a = _loss_samples(design, model, x0, 1500)
    b = _loss_samples(mdlm, model.denoiser, x0, 1500, seed=1)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(float(a.mean() - b.mean())) < 4 * se, (float(a.mean()), float(b.mean()), se)
    if preset == "atat/tokens":  # the point of the design: fewer rows through the head
        g = torch.Generator().manual_seed(2)
        kept = design.loss(model, x0, g)[1]["kept_fraction"]
        assert 0.3 < float(kept) < 0.7


# --- kind 2: a per-token schedule's own bound -------------------------------------------------


P = torch.tensor([0.45, 0.25, 0.15, 0.08, 0.05, 0.02], dtype=torch.float64)  # i.i.d. source
ENTROPY = float(-(P * P.log()).sum())  # nats per token: the exact NLL rate


class IIDModel(torch.nn.Module):
    """A denoiser for an i.i.d. source: at every masked row, the distribution mu(level)."""

    def __init__(self, mu):
        super().__init__()
        self.mu = mu

    def forward(self, x_t, level, at=None):
        sequence = at.nonzero(as_tuple=True)[0]
        return self.mu(level[sequence]).log().float()


def _posterior(schedule):
    """The exact p(x0 = v | masked at rate r) for the i.i.d. source: P_v r^{w_v}, normalised."""
    def mu(rate):
        unnorm = P[None, :] * torch.exp(schedule.exponents.double()[None, :] * rate.double().log()[:, None])
        return unnorm / unnorm.sum(-1, keepdim=True)
    return mu


def _exact_bound(schedule, mu, eps=1e-3, n=20_000):
    """Per-token bound by quadrature over t (midpoints) and exact expectation over x0 and masking."""
    base = build_schedule("loglinear", eps)
    t = time_of((torch.arange(n, dtype=torch.float64) + 0.5) / n, eps)
    rate = base.mask_rate(t)
    V6 = len(P)
    x = torch.arange(V6).repeat(n)  # every (t, x0) pair as a row
    rows_rate = rate.repeat_interleave(V6)
    logits = mu(rows_rate).log()
    _, terms = schedule.bound_terms(logits, x, base.loss_weight(t).repeat_interleave(V6))
    masked_prob = schedule.mask_prob(rows_rate, x[:, None])[:, 0].double()
    per_t = (P[x] * masked_prob * terms.double()).view(n, V6).sum(-1)
    return float(per_t.mean() * (1 - eps))


def _schedule(log_w):
    return TokenSchedule(len(P), torch.tensor(log_w))


@pytest.mark.parametrize("log_w", [[0.0] * 6, [1.0, 0.8, 0.5, 0.2, 0.0, 0.0], [0.0, 0.3, 0.6, 0.9, 1.2, 1.386]])
def test_own_bound_is_never_below_the_entropy_and_tight_for_the_posterior(log_w):
    schedule = _schedule(log_w)
    tight = _exact_bound(schedule, _posterior(schedule))
    # exact posterior: the bound equals the entropy up to the [0, eps] truncation and quadrature
    assert abs(tight - ENTROPY) < 5e-3, (tight, ENTROPY)
    wrong = [lambda r: P[None, :].expand(len(r), -1),  # the marginal, not the posterior
             lambda r: torch.full((len(r), len(P)), 1 / len(P), dtype=torch.float64)]
    for mu in wrong:
        bound = _exact_bound(schedule, mu)
        assert bound >= ENTROPY - 5e-3
    # with a non-uniform schedule the marginal is a strictly worse denoiser than the posterior
    if any(log_w):
        assert _exact_bound(schedule, wrong[0]) > tight + 0.01


def test_own_bound_monte_carlo_through_nelbo_terms():
    """The code path training and eval use (masking by token, the model's rows, the terms):
    its Monte Carlo mean for the exact posterior is the entropy, within 4 standard errors."""
    schedule = _schedule([1.0, 0.8, 0.5, 0.2, 0.0, 0.0])
    model = IIDModel(_posterior(schedule))
    base = build_schedule("loglinear", 1e-3)
    g = torch.Generator().manual_seed(0)
    x0 = torch.multinomial(P.float(), 64 * 32, replacement=True, generator=g).view(64, 32)
    draws = []
    for _ in range(300):
        t = time_of(torch.rand(64, generator=g), 1e-3)
        out = nelbo_terms(model, x0, t, base, len(P), g, token_schedule=schedule)
        draws.append(out.terms.mean())
    draws = torch.stack(draws).double()
    se = float(draws.std() / math.sqrt(len(draws)))
    assert abs(float(draws.mean()) - ENTROPY) < 4 * se + 5e-3, (float(draws.mean()), ENTROPY, se)


class PatternDenoiser(torch.nn.Module):
    """Fixed logits that depend on the whole masking pattern of x_t (so the loss of a learned
    schedule depends on which positions its masking picked)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab_size, self.mask_id = vocab, vocab
        self.table = torch.randn(vocab + 1, vocab, generator=torch.Generator().manual_seed(3))

    def forward(self, x_t, level, at=None):
        rows = self.table[x_t]  # (B, T, V)
        return (rows + rows.sum(dim=1, keepdim=True))[at]


def test_learned_schedule_gradient_is_unbiased():
    """GenMD4's leave-one-out estimator through the objective: on a fixed denoiser and time, the
    mean gradient with respect to the schedule's parameters equals the gradient of the exact
    expectation over all 2^T maskings (within 4 standard errors over repeats), which the
    pathwise part alone misses."""
    from itertools import product

    from atat_cli.models.importance_estimator import ATATModel

    V3, x0_row, t_fixed = 3, torch.tensor([0, 1, 2, 1]), 0.6
    cfg = _cfg("atat/learned", "atat.importance.enabled=false")
    schedule = TokenSchedule(V3, learned=True)
    with torch.no_grad():
        schedule.raw.copy_(torch.tensor([-1.0, 0.5, 1.0]))
    model = ATATModel(PatternDenoiser(V3), None, schedule)
    objective = build_objective(cfg, V3, 0)
    objective.sample_times = lambda n, generator, device: (torch.full((n,), t_fixed), None, None)
    base = objective.schedule
    t = torch.tensor([t_fixed])
    rate = base.mask_rate(t)

    def exact(pathwise_only=False):
        total = 0.0
        for pattern in product([False, True], repeat=len(x0_row)):
            masked = torch.tensor(pattern)[None]
            x0 = x0_row[None]
            x_t = torch.where(masked, torch.full_like(x0, V3), x0)
            logits = model(x_t, rate, at=masked)
            _, terms = schedule.bound_terms(logits, x0[masked], base.loss_weight(t).expand(int(masked.sum())))
            q = schedule.log_mask_prob(rate, x0, masked).exp()[0]
            total = total + (q.detach() if pathwise_only else q) * terms.sum() / len(x0_row)
        schedule.raw.grad = None
        total.backward()
        return schedule.raw.grad.clone()

    full, pathwise = exact(), exact(pathwise_only=True)
    grads = []
    for seed in range(8):
        schedule.raw.grad = None
        loss, _ = objective.loss(model, x0_row.repeat(8000, 1), torch.Generator().manual_seed(seed), diagnostics=False)
        loss.backward()
        grads.append(schedule.raw.grad.clone())
    grads = torch.stack(grads).double()
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    assert ((mean - full.double()).abs() < 4 * se + 1e-4).all(), (mean, full, se)
    assert ((pathwise.double() - full.double()).abs() > 10 * se).any()  # the score term matters here


def test_learned_schedule_starts_near_mdlm_and_keeps_exponents_at_least_one():
    schedule = TokenSchedule(5, learned=True)
    assert torch.allclose(schedule.exponents, torch.ones(5), atol=2e-3)
    with torch.no_grad():
        schedule.raw.copy_(torch.tensor([-30.0, -2.0, 0.0, 2.0, 30.0]))
    assert (schedule.exponents >= 1).all()
    # its bound is the per-token bound of test_own_bound_is_never_below_...: any w >= 1 keeps it valid
    learned = TokenSchedule(len(P), learned=True)
    with torch.no_grad():
        learned.raw.copy_(torch.linspace(-1.2, 1.0, len(P)))
    assert _exact_bound(learned, lambda r: P[None, :].expand(len(r), -1)) >= ENTROPY - 5e-3
    assert abs(_exact_bound(learned, _posterior(learned)) - ENTROPY) < 5e-3


def test_frequency_exponents_mask_frequent_tokens_later():
    counts = np.array([1000, 100, 10, 0])
    w = frequency_exponents(counts, strength=0.5, max_exponent=4.0).exp()
    assert w[0] > w[1] >= w[2] >= w[3] == 1.0 and float(w.max()) <= 4.0
    assert torch.equal(frequency_exponents(counts, 0.0, 4.0), torch.zeros(4))


def test_kinds_are_labelled():
    assert _cfg("atat/time").atat.kind() == "unbiased"
    assert _cfg("atat/time_grad").atat.kind() == "unbiased"
    assert _cfg("atat/time_grad_bound").atat.kind() == "unbiased"
    assert _cfg("atat/tokens").atat.kind() == "unbiased"
    assert _cfg("atat/frequency").atat.kind() == "own-bound"
    assert _cfg("atat/learned").atat.kind() == "own-bound"
    with pytest.raises(AtatError, match="batch_size must be even"):
        _cfg("atat/learned", "train.batch_size=3")
    assert _cfg("atat/seed").atat.kind() == "neither"
    assert _cfg("atat/time_unweighted").atat.kind() == "neither"
    assert _cfg("atat/time_bell").atat.kind() == "unbiased"
    assert _cfg("atat/time_bell_unweighted").atat.kind() == "neither"
    default = load_config("test", "atat").atat
    assert default.kind() == "unbiased" and default.time.proposal == "adaptive" and default.time.signal == "grad_bound"
    with pytest.raises(AtatError, match="strength"):
        _cfg("atat/frequency", "atat.schedule.strength=-1")


def test_ancestral_sampling_follows_the_per_token_schedule():
    """With the exact posterior of an i.i.d. source under a per-token schedule, the reverse process
    that follows the schedule generates the source itself; ignoring the schedule does not."""
    from atat_cli.sampling.samplers import SamplerSettings, sample

    schedule = _schedule([1.386, 1.0, 0.5, 0.2, 0.0, 0.0])
    posterior = _posterior(schedule)
    mask_id = len(P)

    def denoiser(x, level):  # (B, T, V + 1): the posterior at every position, mask logit last
        logits = posterior(level.clamp(min=1e-6)).log().float()
        return torch.cat([logits, torch.full_like(logits[:, :1], -1e9)], dim=-1)[:, None, :].expand(-1, x.shape[1], -1)

    x = torch.full((4000, 8), mask_id)
    g = torch.Generator().manual_seed(0)
    settings = SamplerSettings(steps=32)
    followed = sample(denoiser, x, mask_id, settings, generator=g, token_schedule=schedule).tokens
    ignored = sample(denoiser, x, mask_id, settings, generator=g).tokens
    freq = lambda tokens: torch.bincount(tokens.flatten(), minlength=len(P)).double() / tokens.numel()  # noqa: E731
    se = (P * (1 - P) / x.numel()).sqrt()
    assert ((freq(followed) - P).abs() < 5 * se + 2e-3).all(), freq(followed)
    assert ((freq(ignored) - P).abs() > 10 * se).any(), freq(ignored)
