"""BD3-LM's block-causal denoiser (model.block_size): what each block sees, its blockwise NELBO
(never below the entropy of a source with dependencies, tight for the exact posterior, AR's
exact NLL at blocks of 1), and sampling in its own blocks."""

from __future__ import annotations

from itertools import product

import pytest
import torch
from test_block_cache import V, random_dit, tokens
from test_position_schedule import ENTROPY, JOINT, MASK, SEQS, WRONG, L, _posterior
from test_sampling import random_run

from atat_cli.config import load_config
from atat_cli.diffusion import build_schedule, time_of
from atat_cli.models.dit import block_causal_mask
from atat_cli.objectives import nelbo_terms
from atat_cli.sampling import SamplerSettings, generate


def block_dit(block_size):
    return random_dit(2, f"model.block_size={block_size}")


def test_the_mask_lets_noisy_blocks_see_their_own_noise_and_earlier_clean_blocks_only():
    expected = torch.tensor([  # queries: noisy 0-3, clean 0-3; keys: the same order
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(block_causal_mask(4, 2), expected)


@torch.no_grad()
def test_a_block_reads_its_own_noisy_tokens_and_the_clean_blocks_before_it_only():
    model, k = block_dit(8), slice(16, 24)  # the third block of 8 in a context of 32
    x_t, context, level = tokens(2, 32, 0), tokens(2, 32, 1, high=V), torch.tensor([0.3, 0.8])
    logits = model(x_t, level, context=context)
    other_noise, later_clean = x_t.clone(), context.clone()
    other_noise[:, :16], other_noise[:, 24:] = tokens(2, 16, 2), tokens(2, 8, 3)
    later_clean[:, 16:] = tokens(2, 16, 4, high=V)
    assert torch.allclose(model(other_noise, level, context=later_clean)[:, k], logits[:, k], atol=1e-5)
    earlier_clean = context.clone()
    earlier_clean[:, 3] = (context[:, 3] + 1) % V
    assert not torch.allclose(model(x_t, level, context=earlier_clean)[:, k], logits[:, k], atol=1e-3)
    own_noise = x_t.clone()
    own_noise[:, 20] = (x_t[:, 20] + 1) % V
    assert not torch.allclose(model(own_noise, level, context=context)[:, k], logits[:, k], atol=1e-3)


@torch.no_grad()
def test_one_block_of_the_whole_context_is_the_bidirectional_dit():
    block, bidirectional = block_dit(32), block_dit(0)
    bidirectional.load_state_dict(block.state_dict())
    x_t, level = tokens(3, 32, 0), torch.tensor([0.1, 0.5, 0.9])
    expected = bidirectional(x_t, level)
    assert torch.allclose(block(x_t, level, context=tokens(3, 32, 1, high=V)), expected, atol=1e-3)  # logits ~40
    masked = x_t == V
    assert torch.allclose(block(x_t, level, at=masked, context=x_t), expected[masked][:, :V], atol=1e-3)


@torch.no_grad()
def test_at_blocks_of_one_the_nelbo_terms_are_the_exact_left_to_right_nll():
    """Position i sees the clean prefix and its own mask only, so its NLL does not depend on
    which other positions the draw masked: each term is w(t) times the left-to-right NLL."""
    model, schedule = block_dit(1), build_schedule("loglinear", 1e-3)
    x0, t = tokens(4, 32, 0, high=V), torch.tensor([0.2, 0.4, 0.6, 0.9])
    out = nelbo_terms(model, x0, t, schedule, V, torch.Generator().manual_seed(0))
    everything = model(torch.full_like(x0, V), schedule.mask_rate(t), context=x0)[..., :V].float()
    left_to_right = torch.nn.functional.cross_entropy(everything.transpose(1, 2), x0, reduction="none")
    assert out.masked.any() and not out.masked.all()
    assert torch.allclose(out.nll[out.masked], left_to_right[out.masked], atol=1e-4)
    assert torch.allclose(out.terms, schedule.loss_weight(t)[:, None] * out.nll, atol=1e-5)


def _exact_block_bound(block_size: int, denoiser, eps=1e-3, n=400) -> float:
    """Nats per sequence of the 4-position Markov source (test_position_schedule) by quadrature
    over t and exact sums over x0 and every masking of each block: block k's positions masked at
    the rate r(t), the blocks before it clean, those after it masked (unseen)."""
    base = build_schedule("loglinear", eps)
    t = time_of((torch.arange(n, dtype=torch.float64) + 0.5) / n, eps)
    rate, weight = base.mask_rate(t), base.loss_weight(t)
    total = 0.0
    for start in range(0, L, block_size):
        inside = torch.zeros(L, dtype=torch.bool)
        inside[start : start + block_size] = True
        for pattern in product([False, True], repeat=block_size):
            masked = torch.zeros(L, dtype=torch.bool)
            masked[start : start + block_size] = torch.tensor(pattern)
            x_t = torch.where(masked | (torch.arange(L) >= start + block_size), MASK, SEQS)  # (81, L)
            nll = -denoiser(x_t).log().gather(-1, SEQS[..., None])[..., 0]  # (81, L)
            k = sum(pattern)
            p_pattern = rate**k * (1 - rate) ** (block_size - k)  # (n,)
            total += float((p_pattern * weight).mean() * (1 - eps) * (JOINT @ (nll * masked).sum(-1)))
    return total


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_the_blockwise_bound_is_never_below_the_entropy_and_tight_for_the_posterior(block_size):
    tight = _exact_block_bound(block_size, _posterior)
    assert abs(tight - ENTROPY) < 0.02 * ENTROPY, (tight, ENTROPY)
    for name in ("marginal", "blurred"):
        assert _exact_block_bound(block_size, WRONG[name]) > ENTROPY + 0.05, name


def test_blocks_of_one_are_tight_for_a_left_to_right_denoiser_that_uniform_masking_penalises():
    def left_to_right(x_t):  # exact given the prefix before the first masked position, blind after it
        first_masked = (x_t == MASK).int().cumsum(-1) > 0
        return _posterior(torch.where(first_masked, MASK, x_t))

    assert abs(_exact_block_bound(1, left_to_right) - ENTROPY) < 0.02 * ENTROPY
    assert _exact_block_bound(L, left_to_right) > ENTROPY + 0.05


@pytest.mark.parametrize("settings", [SamplerSettings(steps=4), SamplerSettings(sampler="confidence", steps=4),
                                      SamplerSettings(sampler="confidence", adaptive="threshold", threshold=0.5)],
                         ids=lambda s: s.describe())
def test_sampling_fills_the_models_own_blocks_in_order_and_keeps_the_prompt(settings):
    run = random_run(overrides=["model.block_size=8"])
    prompt = "Hi!"  # 3 bytes: the first block of 8 holds the prompt and 5 positions to fill
    out = generate(run, prompt, settings, length=21, num_samples=2, seed=0, record=True)
    mask_id = run.data.vocab_size
    assert out.block_size == 8
    for s in out.samples:
        assert s.text.startswith(prompt) and mask_id not in s.ids and len(s.ids) == 24
    # each step reveals positions of one block of 8, and the blocks come left to right
    revealed = [rec.unmasked.nonzero(as_tuple=True)[1] // 8 for rec in out.trajectory[0]]
    blocks = [int(r.unique()) for r in revealed if len(r)]
    assert all(len(r.unique()) <= 1 for r in revealed) and blocks == sorted(blocks) and set(blocks) == {0, 1, 2}
    assert generate(run, prompt, settings, length=21, num_samples=2, seed=0).samples[0].ids == out.samples[0].ids


@torch.no_grad()
def test_the_prefix_cache_gives_the_two_copy_pass_logits_and_runs_each_finished_block_once():
    from atat_cli.sampling.block_cache import PrefixCache, PrefixCacheDenoiser

    model = block_dit(8)
    x = tokens(2, 32, 0, high=V)
    x[:, 20:] = V  # blocks 0-1 finished, block 2 partly decoded, block 3 masked
    x[0, 17] = x[1, 22] = V
    calls = []

    def call(x, level, **kwargs):
        calls.append(x.shape[1])
        return model(x, level, **kwargs)

    def expected(x, start):
        return model(x, (x[:, start : start + 8] == V).float().mean(1))[:, start : start + 8]

    prefix = PrefixCache(call, n_layers=2, block_size=8)
    block2 = PrefixCacheDenoiser(prefix, 0, 16, 24, mask_id=V)
    assert torch.allclose(block2(x, torch.zeros(2))[:, 16:24], expected(x, 16), atol=1e-3)  # logits ~30
    x[:, 20:24] = 3  # a later step of the block, then the next block
    assert torch.allclose(block2(x, torch.zeros(2))[:, 16:24], expected(x, 16), atol=1e-3)
    block3 = PrefixCacheDenoiser(prefix, 0, 24, 32, mask_id=V)
    assert torch.allclose(block3(x, torch.zeros(2))[:, 24:32], expected(x, 24), atol=1e-3)
    assert calls == [8, 8, 8, 8, 8, 8]  # blocks 0 and 1, two steps of block 2, block 2 finished, block 3


def test_generation_with_the_prefix_cache_fills_every_block_and_refuses_a_bidirectional_run():
    """(The logits are the uncached ones up to float error, tested above; a random model's
    near-one-hot predictions make the confidence order itself that noisy, so the samples are
    not compared token for token.)"""
    from atat_cli.errors import AtatError

    run = random_run(overrides=["model.block_size=8"])
    settings = SamplerSettings(sampler="confidence", steps=4)
    cached = generate(run, "Hi!", settings, length=21, num_samples=2, seed=0, cache="prefix")
    plain = generate(run, "Hi!", settings, length=21, num_samples=2, seed=0)
    assert cached.nfe == plain.nfe == 12 and cached.cache == "prefix"
    for s in cached.samples:
        assert s.text.startswith("Hi!") and run.data.vocab_size not in s.ids and len(s.ids) == 24
    assert generate(run, "Hi!", settings, length=21, num_samples=2, seed=0, cache="prefix").samples[0].ids == \
        cached.samples[0].ids
    with pytest.raises(AtatError, match="exact only for a block-causal run"):
        generate(random_run(), "", settings, length=8, cache="prefix")


@pytest.mark.parametrize("method,preset", [("mdlm", None), ("atat", "atat/time_grad_bound"), ("atat", "atat/tokens")])
def test_training_objectives_give_a_block_causal_denoiser_the_clean_sequence(method, preset):
    from atat_cli.models import build_model
    from atat_cli.objectives import build_objective

    cfg = load_config(size="test", method=method, config_file=preset, overrides=["model.block_size=4"])
    model = build_model(cfg, V)
    denoiser = getattr(model, "denoiser", model)
    seen = []
    denoiser.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("context")), with_kwargs=True)
    x0 = tokens(4, 32, 0, high=V)
    build_objective(cfg, V, 0).loss(model, x0, torch.Generator().manual_seed(0))
    assert len(seen) == 1 and torch.equal(seen[0], x0)
