"""The per-position schedule (atat/position, kind 2): its bound is never below the exact NLL of a
source with dependencies between positions and is tight for the exact posterior; Monte Carlo
through the training and evaluation code agrees; window 1 is MDLM; ancestral sampling follows it."""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch

from atat_cli.config import load_config
from atat_cli.diffusion import PositionSchedule, build_schedule, time_of
from atat_cli.errors import AtatError
from atat_cli.models import build_model
from atat_cli.objectives import build_objective, nelbo_terms

# A Markov chain over L = 4 positions and 3 symbols: the joint p(x) of all 81 sequences is exact.
L, V3 = 4, 3
START = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
MOVE = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64)
SEQS = torch.tensor(list(product(range(V3), repeat=L)))  # (81, L)
JOINT = START[SEQS[:, 0]] * torch.stack([MOVE[SEQS[:, i], SEQS[:, i + 1]] for i in range(L - 1)]).prod(0)
ENTROPY = float(-(JOINT * JOINT.log()).sum())  # nats per sequence
MASK = V3


def _posterior(x_t: torch.Tensor) -> torch.Tensor:
    """(B, L, V) the exact p(x0_i = v | the unmasked tokens of x_t), by enumeration."""
    agrees = ((SEQS[None] == x_t[:, None]) | (x_t[:, None] == MASK)).all(-1)  # (B, 81)
    weight = JOINT[None] * agrees
    onehot = torch.nn.functional.one_hot(SEQS, V3).double()  # (81, L, V)
    post = torch.einsum("bs,slv->blv", weight, onehot)
    return post / post.sum(-1, keepdim=True)


WRONG = {
    "exact": _posterior,
    "marginal": lambda x_t: torch.einsum("s,slv->lv", JOINT, torch.nn.functional.one_hot(SEQS, V3).double())
    .expand(x_t.shape[0], -1, -1),
    "blurred": lambda x_t: 0.7 * _posterior(x_t) + 0.1,
}


def _exact_bound(window: float, denoiser, eps=1e-3, n=400) -> float:
    """Nats per sequence by quadrature over t (midpoints) and exact sums over x0 and all 2^L
    maskings, with the schedule's own probabilities and weights."""
    schedule, base = PositionSchedule(L, window), build_schedule("loglinear", eps)
    t = time_of((torch.arange(n, dtype=torch.float64) + 0.5) / n, eps)
    rate = base.mask_rate(t)
    m = schedule.rate_at(rate).double()  # (n, L)
    patterns = torch.tensor(list(product([False, True], repeat=L)))  # (16, L)
    total = 0.0
    for pattern in patterns:
        x_t = torch.where(pattern, MASK, SEQS)  # (81, L)
        nll = -denoiser(x_t).log().gather(-1, SEQS[..., None])[..., 0]  # (81, L)
        p_pattern = torch.where(pattern, m, 1 - m).prod(-1)  # (n,)
        inside = pattern & (m > 0) & (m < 1)  # (n, L)
        weight = torch.where(inside, base.loss_weight(t)[:, None] * rate[:, None] / (window * m.clamp(min=1e-300)), 0.0)
        total += float((p_pattern[:, None] * weight * (JOINT @ nll)[None]).sum(-1).mean() * (1 - eps))
    return total


@pytest.mark.parametrize("window", [1.0, 0.5, 0.25, 0.05])
def test_position_bound_is_never_below_the_entropy_and_tight_for_the_posterior(window):
    tight = _exact_bound(window, _posterior)
    assert abs(tight - ENTROPY) < 0.02 * ENTROPY, (tight, ENTROPY)
    for name in ("marginal", "blurred"):
        assert _exact_bound(window, WRONG[name]) > ENTROPY + 0.05, name


def test_a_narrow_window_scores_a_left_to_right_model_better_than_uniform_masking():
    """The reason for the design: a denoiser that is exact for left-to-right contexts only (the
    right context ignored) is tight under a narrow window and loses under MDLM's masking."""
    def left_to_right(x_t):
        left = x_t.clone()
        for i in range(L):  # mask everything right of the first masked position
            left[:, i] = torch.where((x_t[:, :i + 1] == MASK).any(-1), MASK, x_t[:, i])
        return _posterior(left)

    narrow, uniform = _exact_bound(0.02, left_to_right), _exact_bound(1.0, left_to_right)
    assert narrow < ENTROPY + 0.1 < uniform, (narrow, ENTROPY, uniform)


class MarkovModel(torch.nn.Module):
    def forward(self, x_t, level, at=None):
        return _posterior(x_t).log().float()[at]


def test_position_bound_monte_carlo_through_nelbo_terms():
    """The code path training and evaluation use: its Monte Carlo mean for the exact posterior is
    the entropy (per token: / L), within 4 standard errors; only positions with a term reach the
    head."""
    schedule, base = PositionSchedule(L, 0.25), build_schedule("loglinear", 1e-3)
    g = torch.Generator().manual_seed(0)
    x0 = SEQS[torch.multinomial(JOINT.float(), 512, replacement=True, generator=g)]
    draws = []
    for _ in range(300):
        t = time_of(torch.rand(512, generator=g), 1e-3)
        out = nelbo_terms(MarkovModel(), x0, t, base, MASK, g, token_schedule=schedule)
        surely_masked = schedule.mask_prob(base.mask_rate(t), x0) == 1
        assert not (out.masked & surely_masked).any()
        draws.append(out.terms.mean())
    draws = torch.stack(draws).double()
    se = float(draws.std() / math.sqrt(len(draws)))
    assert abs(float(draws.mean()) - ENTROPY / L) < 4 * se + 0.005, (float(draws.mean()), ENTROPY / L, se)


def test_window_one_is_mdlm():
    """At window 1 every position has MDLM's rate and weight: the training loss is MDLM's to float
    rounding, with the same random draws."""
    cfg_mdlm = load_config("test", "mdlm", overrides=["train.precision=fp32"])
    cfg_pos = load_config("test", "atat", config_file="atat/position",
                          overrides=["train.precision=fp32", "atat.schedule.window=1", "atat.importance.enabled=false"])
    torch.manual_seed(0)
    mdlm = build_model(cfg_mdlm, 12)
    torch.manual_seed(0)
    pos = build_model(cfg_pos, 12)
    x0 = torch.randint(0, 12, (4, cfg_pos.model.seq_len), generator=torch.Generator().manual_seed(1))
    loss_m, _ = build_objective(cfg_mdlm, 12, 0).loss(mdlm, x0, torch.Generator().manual_seed(2))
    loss_p, _ = build_objective(cfg_pos, 12, 0).loss(pos, x0, torch.Generator().manual_seed(2))
    assert torch.allclose(loss_m, loss_p, rtol=1e-5), (loss_m, loss_p)


def test_position_preset_is_own_bound_and_window_is_checked():
    assert load_config("test", "atat", config_file="atat/position").atat.kind() == "own-bound"
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(AtatError, match="window"):
            load_config("test", "atat", config_file="atat/position", overrides=[f"atat.schedule.window={bad}"])


def test_ancestral_sampling_follows_the_position_schedule():
    """With a narrow window the reverse process reveals the block left to right (each position's
    mean reveal step falls with its index); with the exact posterior it generates the source."""
    from atat_cli.sampling.samplers import SamplerSettings, sample

    schedule = PositionSchedule(L, 0.1)

    def denoiser(x, level):  # (B, L, V + 1): the exact posterior, the mask's logit last
        logits = _posterior(x).log().float()
        return torch.cat([logits, torch.full_like(logits[..., :1], -1e9)], dim=-1)

    x = torch.full((3000, L), MASK)
    g = torch.Generator().manual_seed(0)
    out = sample(denoiser, x, MASK, SamplerSettings(steps=64), generator=g, token_schedule=schedule, record=True)
    when = torch.stack([r.unmasked for r in out.trajectory]).byte().argmax(0).float().mean(0)  # (L,) mean step revealed
    assert (when[1:] > when[:-1] + 5).all(), when
    uniform = sample(denoiser, x, MASK, SamplerSettings(steps=64), generator=g, record=True)
    when_uniform = torch.stack([r.unmasked for r in uniform.trajectory]).byte().argmax(0).float().mean(0)
    assert (when_uniform.max() - when_uniform.min()) < 2, when_uniform
    index = (out.tokens * torch.tensor([V3 ** (L - 1 - i) for i in range(L)])).sum(-1)
    freq = torch.bincount(index, minlength=len(SEQS)).double() / len(index)
    se = (JOINT * (1 - JOINT) / len(index)).sqrt()
    assert ((freq - JOINT).abs() < 5 * se + 2e-3).all()


# --- decoding block by block (evaluation/block_order.py) --------------------------------------


@pytest.mark.parametrize("block_size", [1, 2, 3, L])
def test_block_order_bound_is_the_entropy_for_the_posterior(block_size):
    """For the exact posterior every decoding order has the source's NLL: the mean over draws is
    the entropy (exactly, with no spread, at block size 1), whatever the blocks (3 leaves a short one)."""
    from atat_cli.evaluation.block_order import block_order_nats

    g = torch.Generator().manual_seed(0)
    x0 = SEQS[torch.multinomial(JOINT.float(), 4000, replacement=True, generator=g)]
    nats = block_order_nats(MarkovModel(), x0, block_size, MASK, g, rows_per_pass=999)
    exact = float(-JOINT.log()[torch.tensor([int("".join(map(str, s.tolist())), V3) for s in x0])].mean())
    assert abs(float(nats.mean()) - exact) < 4 * float(nats.std()) / math.sqrt(len(nats)) + 1e-9, (float(nats.mean()), exact)
    assert abs(exact - ENTROPY) < 0.1
    if block_size == 1:
        assert torch.allclose(nats, -JOINT.log()[torch.tensor([int("".join(map(str, s.tolist())), V3) for s in x0])])


def test_block_order_rewards_a_left_to_right_denoiser_only_left_to_right():
    from atat_cli.evaluation.block_order import block_order_nats

    class LeftOnly(torch.nn.Module):  # exact given the tokens left of the first mask, blind to the rest
        def forward(self, x_t, level, at=None):
            first = (x_t == MASK).float().argmax(1, keepdim=True)
            left = torch.where(torch.arange(L)[None] >= first, MASK, x_t)
            return _posterior(left).log().float()[at]

    g = torch.Generator().manual_seed(1)
    x0 = SEQS[torch.multinomial(JOINT.float(), 4000, replacement=True, generator=g)]
    in_order = float(block_order_nats(LeftOnly(), x0, 1, MASK, g).mean())
    any_order = float(block_order_nats(LeftOnly(), x0, L, MASK, g).mean())
    assert abs(in_order - ENTROPY) < 0.05 and any_order > ENTROPY + 0.1, (in_order, any_order, ENTROPY)


def test_eval_block_size_reports_the_left_to_right_bound_beside_the_unchanged_nelbo(atat_home):
    """evaluate_run(block_size=...): the bound of decoding in blocks, and the uniform NELBO as it
    was without it (its own random stream). Bad sizes: tests/test_bad_inputs.py."""
    from atat_cli.runs import evaluate_run
    from atat_cli.training import Trainer

    cfg = load_config("test", "mdlm", overrides=["data.name=tinytext", "train.max_steps=2"])
    run = atat_home / "r"
    Trainer(cfg, run, progress=False, log=lambda *a, **k: None).run()
    plain = evaluate_run(run, mc=2, max_blocks=4)
    both = evaluate_run(run, mc=2, max_blocks=4, block_size=1)
    assert both["nelbo"] == plain["nelbo"] and both["block_size"] == 1 and both["order_nelbo"] > 0
    assert "order_nelbo" not in plain
