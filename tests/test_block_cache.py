"""Cached block decoding: the DiT's dual cache, and generation through it."""

import pytest
import torch
from test_sampling import random_run

from atat_cli.config import load_config
from atat_cli.errors import AtatError
from atat_cli.models import DiT
from atat_cli.sampling import SamplerSettings, generate
from atat_cli.sampling.block_cache import DualCacheDenoiser

V = 11


def random_dit(n_layers, *overrides):
    cfg = load_config(size="test", overrides=[f"model.n_layers={n_layers}", "train.precision=fp32", *overrides]).model
    torch.manual_seed(0)
    model = DiT(cfg, V)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def tokens(B, T, seed, high=V + 1):
    """Random ids below `high`: by default the vocabulary and the mask id."""
    return torch.randint(0, high, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_span_call_on_unchanged_input_equals_the_full_pass():
    model = random_dit(n_layers=3)
    x, level = tokens(2, 24, 0), torch.tensor([0.3, 0.8])
    caches = [{} for _ in range(3)]
    full = model(x, level, kv_caches=caches)
    assert torch.allclose(full, model(x, level))
    span = model(x[:, 8:16], level, kv_caches=caches, start=8)
    assert span.shape == (2, 8, V + 1)
    assert torch.allclose(span, full[:, 8:16], atol=1e-5)


@torch.no_grad()
def test_one_layer_span_call_is_exact_after_the_span_changes():
    # With one layer the keys and values outside the span depend only on their own tokens, so the
    # cache is exact; deeper models are approximate (the outside's hidden states see the span).
    model = random_dit(n_layers=1)
    x, level = tokens(2, 24, 1), torch.tensor([0.5, 0.5])
    caches = [{}]
    model(x, level, kv_caches=caches)
    x2 = x.clone()
    x2[:, 4:12] = tokens(2, 8, 2)
    span = model(x2[:, 4:12], level, kv_caches=caches, start=4)
    assert torch.allclose(span, model(x2, level)[:, 4:12], atol=1e-5)
    deep = random_dit(n_layers=3)
    caches = [{} for _ in range(3)]
    deep(x, level, kv_caches=caches)
    stale = deep(x2[:, 4:12], level, kv_caches=caches, start=4)
    assert not torch.allclose(stale, deep(x2, level)[:, 4:12], atol=1e-3)


@torch.no_grad()
def test_dual_cache_denoiser_runs_the_window_once_then_the_block_only():
    model = random_dit(n_layers=2)
    seen = []

    def call(x, level, **cached):
        seen.append(x.shape[1])
        return model(x, level, **cached)

    denoiser = DualCacheDenoiser(call, 6, 10, n_layers=2)
    x, level = tokens(3, 20, 3), torch.full((3,), 0.5)
    first = denoiser(x, level).clone()
    x[:, 6:10] = tokens(3, 4, 4)
    second = denoiser(x, level)
    assert seen == [20, 4]
    assert torch.equal(second[:, :6], first[:, :6]) and torch.equal(second[:, 10:], first[:, 10:])
    assert not torch.equal(second[:, 6:10], first[:, 6:10])


@pytest.mark.parametrize("settings", [SamplerSettings(steps=4), SamplerSettings(sampler="confidence", steps=4),
                                      SamplerSettings(sampler="remdm", steps=6, eta=0.2),
                                      SamplerSettings(sampler="confidence", adaptive="threshold", threshold=0.5)],
                         ids=lambda s: s.describe())
def test_generation_with_the_dual_cache_fills_every_block_and_keeps_the_prompt(settings):
    run = random_run()
    prompt = "Hi there"
    cached = generate(run, prompt, settings, length=24, block_size=8, cache="dual", num_samples=3, seed=0)
    again = generate(run, prompt, settings, length=24, block_size=8, cache="dual", num_samples=3, seed=0)
    plain = generate(run, prompt, settings, length=24, block_size=8, num_samples=3, seed=0)
    mask_id = run.data.vocab_size
    for s, p, a in zip(cached.samples, plain.samples, again.samples):
        assert s.text.startswith(prompt) and mask_id not in s.ids
        assert s.ids == a.ids  # same seed, same samples
        assert len(s.ids) == len(p.ids)
    assert cached.nfe >= 3  # at least one call per block


def test_dual_cache_refuses_what_it_cannot_do():
    run = random_run()
    with pytest.raises(AtatError, match="unknown cache 'window'"):
        generate(run, "", SamplerSettings(steps=4), length=8, cache="window")
    with pytest.raises(AtatError, match="AR run always decodes with its own KV cache"):
        generate(random_run("ar"), "", SamplerSettings(steps=4), length=8, cache="dual")
