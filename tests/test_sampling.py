"""Samplers, prompts, generation and quality metrics, on fixed-logit fakes and small random models."""

import math
from pathlib import Path

import pytest
import torch

from atat_cli.config import load_config
from atat_cli.data.tokenizer import Tokenizer
from atat_cli.diffusion.schedules import Cosine, LogLinear
from atat_cli.errors import AtatError
from atat_cli.models import build_model
from atat_cli.runs import TrainedRun
from atat_cli.sampling import (
    SamplerSettings,
    build_layout,
    generate,
    generative_perplexity,
    sample,
    sample_categorical,
    score_generation,
    time_grid,
    uncertainty,
    unigram_entropy,
)
from atat_cli.sampling.quality import Judge

V = 6
MASK = V


class FixedModel:
    """A denoiser whose logits (T, V + 1) ignore the input; counts calls, remembers noise levels."""

    def __init__(self, logits):
        self.logits = logits
        self.calls = 0
        self.levels = []

    def __call__(self, x, level):
        self.calls += 1
        self.levels.append(level.clone())
        return self.logits[: x.shape[1]].expand(x.shape[0], -1, -1)


def peaked_logits(strengths):
    """Position i puts logit strengths[i] on token i % V: larger = more confident."""
    logits = torch.zeros(len(strengths), V + 1)
    for i, c in enumerate(strengths):
        logits[i, i % V] = c
    return logits


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


SETTINGS = [
    SamplerSettings(sampler="ancestral", steps=5),
    SamplerSettings(sampler="ancestral", steps=40, grid="cosine"),
    SamplerSettings(sampler="remdm", steps=30, remask="cap", eta=0.2),
    SamplerSettings(sampler="remdm", steps=12, remask="conf", eta=0.5, grid="cosine"),
    SamplerSettings(sampler="confidence", steps=4, metric="maxprob"),
    SamplerSettings(sampler="uncertainty", steps=3, metric="margin", grid="cosine"),
    SamplerSettings(sampler="uncertainty", steps=50, metric="entropy", temperature=0.5, top_p=0.8),
    SamplerSettings(sampler="importance", steps=4),
    SamplerSettings(sampler="confidence", adaptive="threshold", threshold=0.6),
    SamplerSettings(sampler="uncertainty", adaptive="entropy-bound", gamma=0.5),
    SamplerSettings(sampler="importance", adaptive="threshold", threshold=1.0, temperature=0.0),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
def test_every_sampler_fills_every_masked_position_and_keeps_the_prompt(settings):
    g = gen(1)
    model = FixedModel(torch.randn(12, V + 1, generator=g) * 2)
    x = torch.randint(0, V, (4, 12), generator=g)
    masked = torch.rand(4, 12, generator=g) < 0.6
    x[masked] = MASK
    out = sample(model, x, MASK, settings, generator=g, importance=lambda x_t, level: torch.rand(x_t.shape, generator=g))
    assert (out.tokens != MASK).all()
    assert torch.equal(out.tokens[~masked], x[~masked])
    assert out.nfe == model.calls and out.nfe >= 1
    assert torch.equal(x[masked], torch.full_like(x[masked], MASK))  # the input is not modified


def test_fill_restricts_which_masks_are_filled():
    model = FixedModel(torch.randn(10, V + 1, generator=gen()))
    x = torch.full((2, 10), MASK)
    fill = torch.zeros(2, 10, dtype=torch.bool)
    fill[:, 2:6] = True
    for settings in (SamplerSettings(steps=8), SamplerSettings(sampler="confidence", steps=2)):
        out = sample(model, x, MASK, settings, fill=fill, generator=gen())
        assert (out.tokens[fill] != MASK).all() and (out.tokens[~fill] == MASK).all()


def test_ancestral_cache_skips_exactly_the_steps_without_change():
    model = FixedModel(torch.randn(8, V + 1, generator=gen()))
    x = torch.full((3, 8), MASK)
    out = sample(model, x, MASK, SamplerSettings(steps=100), generator=gen(2), record=True)
    changed = torch.stack([r.unmasked.any(dim=1) for r in out.trajectory])  # (steps, B)
    assert (~changed).any(), "the test needs steps without any change"
    # The network runs at the first step and after every step that changed a row still masked.
    still_masked = torch.stack([(r.tokens == MASK).any(dim=1) for r in out.trajectory])
    needed = torch.cat([torch.ones(1, 3, dtype=torch.bool), changed[:-1] & still_masked[:-1]])
    assert out.nfe == model.calls == int(needed.any(dim=1).sum())
    # Each row is evaluated exactly once per step in which it changes.
    assert out.row_nfe.tolist() == changed.sum(dim=0).tolist()
    assert out.nfe < len(out.trajectory) <= 100


def test_ancestral_uses_the_schedules_masking_probability_not_t():
    schedule = Cosine(eps=1e-3)
    model = FixedModel(torch.zeros(64, V + 1))
    x = torch.full((64, 64), MASK)
    out = sample(model, x, MASK, SamplerSettings(steps=2), generator=gen(), schedule=schedule, record=True)
    t = torch.tensor([1.0, 0.5], dtype=torch.float64)
    rate = schedule.mask_rate(t)
    assert model.levels[0][0].item() == pytest.approx(rate[0].item())
    # From t=1 to t=0.5 a token is revealed with probability (m(1) - m(0.5)) / m(1) ~ 0.707, not 0.5.
    revealed = out.trajectory[0].unmasked.float().mean().item()
    assert revealed == pytest.approx(((rate[0] - rate[1]) / rate[0]).item(), abs=0.03)


@pytest.mark.parametrize("remask", ["cap", "rescale", "conf"])
def test_remdm_remasks_while_the_masked_fraction_follows_the_schedule(remask):
    B, T, steps = 400, 16, 10
    model = FixedModel(torch.randn(T, V + 1, generator=gen()))
    x = torch.full((B, T), MASK)
    x[:, :4] = 1  # a prompt
    settings = SamplerSettings(sampler="remdm", steps=steps, remask=remask, eta=0.3)
    out = sample(model, x, MASK, settings, generator=gen(3), record=True)
    rate = LogLinear().mask_rate(time_grid(steps, "linear", "cpu"))
    remasked = 0
    for i, rec in enumerate(out.trajectory):
        masked = rec.tokens[:, 4:] == MASK
        # E[masked fraction after step i] = m(t_{i+1}) for every sigma_t <= sigma_max (binomial spread: 4 sd)
        assert masked.float().mean().item() == pytest.approx(rate[i + 1].item(), abs=4 * 0.5 / math.sqrt(B * (T - 4)))
        assert (rec.tokens[:, :4] == 1).all()  # the prompt is never re-masked
        if i:
            remasked += int((masked & (out.trajectory[i - 1].tokens[:, 4:] != MASK)).sum())
    assert remasked > 0, "remdm must re-mask some decoded tokens"
    assert (out.tokens != MASK).all() and out.nfe == model.calls


def test_remdm_with_eta_zero_never_remasks_and_conf_remasks_the_least_sure_first():
    model = FixedModel(torch.randn(12, V + 1, generator=gen()))
    out = sample(model, torch.full((50, 12), MASK), MASK, SamplerSettings(sampler="remdm", steps=8, eta=0.0),
                 generator=gen(), record=True)
    for before, after in zip(out.trajectory, out.trajectory[1:]):
        assert not ((before.tokens != MASK) & (after.tokens == MASK)).any()
    # conf: tokens drawn with low probability go back first. Position 0 is near-certain, 1 a coin flip.
    logits = torch.zeros(2, V + 1)
    logits[0, 0] = 20.0
    logits[0, MASK] = logits[1, MASK] = -1e9
    out = sample(FixedModel(logits), torch.full((3000, 2), MASK), MASK,
                 SamplerSettings(sampler="remdm", steps=4, remask="conf", eta=0.5), generator=gen(), record=True)
    back = torch.zeros(2)
    for before, after in zip(out.trajectory, out.trajectory[1:]):
        back += ((before.tokens != MASK) & (after.tokens == MASK)).float().sum(dim=0)
    assert back[1] > 1.3 * back[0]


def _reveal_order(trajectory):
    return [int(r.unmasked[0].nonzero()[0]) for r in trajectory]


@pytest.mark.parametrize("metric", ["entropy", "maxprob", "margin"])
def test_confidence_order_descends_and_uncertainty_order_ascends(metric):
    strengths = [1.0, 4.0, 0.5, 3.0, 2.0, 6.0]
    model = FixedModel(peaked_logits(strengths))
    x = torch.full((1, 6), MASK)
    by_confidence = sorted(range(6), key=lambda i: -strengths[i])
    for name, expected in (("confidence", by_confidence), ("uncertainty", by_confidence[::-1])):
        out = sample(model, x, MASK, SamplerSettings(sampler=name, steps=6, metric=metric), generator=gen(), record=True)
        assert all(int(r.unmasked.sum()) == 1 for r in out.trajectory)
        assert _reveal_order(out.trajectory) == expected, name


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_position_uncertainty_matches_the_probabilities_definition(monkeypatch, compiled):
    from atat_cli.sampling import samplers

    logits = (torch.randn(3, 5, 40, generator=gen(1)) * 3).bfloat16()
    probs = torch.softmax(logits.float(), dim=-1).reshape(15, 40)
    monkeypatch.setattr(samplers, "COMPILE_MIN_ELEMENTS", 0 if compiled else 2**62)
    monkeypatch.setattr(samplers, "_compiled_stats", None)
    for metric in ("entropy", "maxprob", "margin"):
        unsure, entropy, top = samplers.position_uncertainty(logits, metric)
        assert unsure.shape == (3, 5)
        assert torch.allclose(unsure.reshape(15), uncertainty(probs, metric), atol=1e-5)
        assert torch.allclose(entropy.reshape(15), uncertainty(probs, "entropy"), atol=1e-5)
        assert torch.allclose(top.reshape(15), probs.max(dim=-1).values, atol=1e-6)
    assert (samplers._compiled_stats is not None) == compiled


def test_importance_order_follows_the_estimator():
    model = FixedModel(torch.zeros(5, V + 1))  # equal uncertainty everywhere
    scores = torch.tensor([[0.2, 0.9, 0.1, 0.5, 0.7]])
    out = sample(model, torch.full((1, 5), MASK), MASK, SamplerSettings(sampler="importance", steps=5),
                 generator=gen(), importance=lambda x_t, level: scores, record=True)
    assert _reveal_order(out.trajectory) == [1, 4, 3, 0, 2]
    assert torch.equal(out.trajectory[0].importance, scores)
    with pytest.raises(AtatError, match="importance estimator"):
        sample(model, torch.full((1, 5), MASK), MASK, SamplerSettings(sampler="importance"), generator=gen())


@pytest.mark.parametrize("rule", [dict(adaptive="threshold", threshold=0.9), dict(adaptive="entropy-bound", gamma=0.5)])
def test_adaptive_steps_are_fewer_when_the_model_is_confident(rule):
    x = torch.full((2, 16), MASK)
    confident = sample(FixedModel(peaked_logits([9.0] * 16)), x, MASK, SamplerSettings(sampler="confidence", **rule),
                       generator=gen())
    unsure = sample(FixedModel(peaked_logits([0.5] * 16)), x, MASK, SamplerSettings(sampler="confidence", **rule),
                    generator=gen())
    assert confident.row_steps.max() < unsure.row_steps.min()
    assert unsure.nfe == int(unsure.row_steps.max()) and (unsure.tokens != MASK).all()


def test_entropy_bound_reveals_the_longest_prefix_under_gamma():
    # Entropies are identical, so a prefix of n positions has sum - max = (n - 1) * H.
    model = FixedModel(peaked_logits([1.0] * 10))
    probs = torch.softmax(peaked_logits([1.0])[0, :V], dim=-1)
    entropy = float(-(probs * probs.log()).sum())
    out = sample(model, torch.full((1, 10), MASK), MASK,
                 SamplerSettings(sampler="confidence", adaptive="entropy-bound", gamma=3.5 * entropy),
                 generator=gen(), record=True)
    assert [int(r.unmasked.sum()) for r in out.trajectory] == [4, 4, 2]


def test_threshold_reveals_every_confident_position_and_at_least_one():
    model = FixedModel(peaked_logits([9.0, 0.1, 9.0, 0.2, 9.0, 0.3]))
    out = sample(model, torch.full((1, 6), MASK), MASK,
                 SamplerSettings(sampler="confidence", adaptive="threshold", threshold=0.9), generator=gen(), record=True)
    assert out.trajectory[0].unmasked[0].nonzero().flatten().tolist() == [0, 2, 4]
    assert [int(r.unmasked.sum()) for r in out.trajectory] == [3, 1, 1, 1]


def test_time_grids_run_from_one_to_zero():
    for grid in ("linear", "cosine"):
        t = time_grid(8, grid, "cpu")
        assert t[0] == 1.0 and t[-1] == pytest.approx(0.0, abs=1e-12) and (t[1:] < t[:-1]).all()
    assert time_grid(4, "cosine", "cpu")[1] > time_grid(4, "linear", "cpu")[1]  # few tokens early


def test_categorical_sampling_matches_the_distribution():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.029, 0.001, 0.0])
    n = 200_000
    draws = sample_categorical(probs.log().expand(n, -1), gen(3))
    counts = torch.bincount(draws, minlength=7).double()
    assert counts[-1] == 0  # probability zero: never drawn
    expected = n * probs[:-1].double()
    chi2 = float(((counts[:-1] - expected) ** 2 / expected).sum())
    assert chi2 < 20.52  # chi-square, 5 degrees of freedom, p = 0.001
    # leading dimensions are kept, one draw per row
    assert sample_categorical(torch.zeros(2, 3, 4), gen()).shape == (2, 3)


def test_temperature_and_top_p():
    logits = torch.tensor([0.5, 0.25, 0.15, 0.1]).log().expand(20_000, -1)
    assert (sample_categorical(logits, gen(), temperature=0.0) == 0).all()
    assert (sample_categorical(logits, gen(), top_p=0.5) == 0).all()
    draws = sample_categorical(logits, gen(), top_p=0.7)  # nucleus {0, 1}, renormalised to 2/3, 1/3
    assert set(draws.tolist()) == {0, 1} and (draws == 0).double().mean().item() == pytest.approx(2 / 3, abs=0.02)
    cold = sample_categorical(logits, gen(), temperature=0.5)  # p^2 renormalised: 0.25 / 0.3525 ~ 0.709
    assert (cold == 0).double().mean().item() == pytest.approx(0.25 / 0.3525, abs=0.02)


@pytest.mark.parametrize("bad, message", [
    (dict(sampler="nope"), "unknown sampler"),
    (dict(steps=0), "steps must be at least 1"),
    (dict(sampler="confidence", adaptive="threshold", threshold=0.0), r"threshold must be in \(0, 1\]"),
    (dict(sampler="confidence", adaptive="threshold", threshold=1.5), r"threshold must be in \(0, 1\]"),
    (dict(adaptive="threshold"), "ordered sampler"),
    (dict(sampler="confidence", adaptive="sometimes"), "unknown adaptive rule"),
    (dict(metric="variance"), "unknown uncertainty metric"),
    (dict(grid="quadratic"), "unknown time grid"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top-p"),
    (dict(sampler="confidence", adaptive="entropy-bound", gamma=-1.0), "gamma"),
])
def test_bad_settings_are_clear_errors(bad, message):
    with pytest.raises(AtatError, match=message):
        SamplerSettings(**bad).validate()


# --- prompts and generation over a run -------------------------------------------------------


def test_layout_prefix_infill_and_unconditional():
    tok = Tokenizer.bytes()
    layout = build_layout("The [MASK]*5 sat on the [MASK].", tok, 257, seq_len=32)
    assert layout.infill and layout.ids == list(b"The ") + [257] * 5 + list(b" sat on the ") + [257] + [ord(".")]
    row = list(layout.ids)
    row[4:9] = list(b"cat!!")
    row[21] = ord("m")
    assert layout.render(row, tok) == "The cat!! sat on the m."
    assert layout.prefix_text == "The "
    prefix = build_layout("Hi", tok, 257, seq_len=32)
    assert not prefix.infill and prefix.ids == list(b"Hi") + [257] * 30
    assert build_layout("Hi", tok, 257, seq_len=32, length=3).ids == list(b"Hi") + [257] * 3
    assert build_layout("", tok, 257, seq_len=32).ids == [257] * 32
    # scoring text stops before the first generated EOS
    row = list(b"Hi") + list(b"ab") + [256] + list(b"zz") + [257] * 25
    assert prefix.continuation(row, tok) == ("ab", list(b"ab"))
    for bad, message in (("x" * 32, "longer than the model's context"), ("a [MASK]*0 b", "asks for no tokens")):
        with pytest.raises(AtatError, match=message):
            build_layout(bad, tok, 257, seq_len=32)
    with pytest.raises(AtatError, match="nothing to generate"):
        build_layout("Hi", tok, 257, seq_len=32, length=0)


class BytesData:
    vocab_size = 257
    eos_id = 256
    name = "fake"

    def tokenizer(self):
        return Tokenizer.bytes()


def random_run(method="mdlm", importance=None, overrides=()) -> TrainedRun:
    """A test-size model with random (not zero) output weights, so that samples depend on the seed."""
    cfg = load_config(size="test", method=method, overrides=["train.precision=fp32", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, BytesData.vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return TrainedRun(cfg, model.eval(), BytesData(), 0, Path("fake/step-0.pt"), importance)


@pytest.fixture(scope="module")
def dit_run():
    return random_run()


@pytest.mark.parametrize("settings", [SamplerSettings(steps=8), SamplerSettings(sampler="confidence", steps=8),
                                      SamplerSettings(sampler="uncertainty", adaptive="entropy-bound")],
                         ids=lambda s: s.describe())
def test_generated_text_begins_with_the_prompt_exactly(dit_run, settings):
    prompt = "  Héllo,\twörld "
    result = generate(dit_run, prompt, settings, num_samples=3, seed=0)
    assert len(result.samples) == 3
    for s in result.samples:
        assert s.text.startswith(prompt) and 257 not in s.ids and len(s.ids) == 32
    assert result.generated_tokens == 3 * (32 - len(prompt.encode()))
    assert result.nfe >= 1 and result.seconds > 0 and result.tokens_per_second > 0
    again = generate(dit_run, prompt, settings, num_samples=3, seed=0)
    assert [s.text for s in again.samples] == [s.text for s in result.samples]
    other = generate(dit_run, prompt, settings, num_samples=3, seed=1)
    assert [s.ids for s in other.samples] != [s.ids for s in result.samples]


def test_infilling_keeps_every_piece_of_text(dit_run):
    result = generate(dit_run, "The [MASK]*5 sat on the mat", SamplerSettings(sampler="confidence", steps=5), seed=0)
    text = result.samples[0].text
    assert text.startswith("The ") and text.endswith(" sat on the mat")
    assert result.samples[0].ids[4:9] != [257] * 5 and result.samples[0].steps == 5


def test_blockwise_generation_beyond_one_context(dit_run):
    result = generate(dit_run, "Go", SamplerSettings(sampler="confidence", steps=4), length=70, block_size=16,
                      num_samples=2, seed=0, record=True)
    for s in result.samples:
        assert len(s.ids) == 72 and 257 not in s.ids and s.text.startswith("Go")
        assert s.steps == 5 * 4  # ceil(70 / 16) blocks of 4 steps
    trajectory = result.trajectory[0]
    revealed = torch.stack([r.unmasked for r in trajectory]).sum(dim=0)
    assert (revealed[:, 2:] == 1).all() and (revealed[:, :2] == 0).all()  # each generated position once
    assert trajectory[-1].nfe == result.nfe
    still_masked = [int((r.tokens == 257).sum()) for r in trajectory]
    assert still_masked == sorted(still_masked, reverse=True) and still_masked[-1] == 0 and still_masked[0] > 0
    # without --block-size a layout longer than the context still works (half-context blocks)
    assert 257 not in generate(dit_run, "", SamplerSettings(steps=2), length=40, seed=0).samples[0].ids


def test_run_errors(dit_run):
    with pytest.raises(AtatError, match="longer than the model's context"):
        generate(dit_run, "y" * 40)
    with pytest.raises(AtatError, match="run has no importance estimator; train with --method atat"):
        generate(dit_run, "a", SamplerSettings(sampler="importance"))
    with pytest.raises(AtatError, match="block size"):
        generate(dit_run, "a", block_size=33)


def test_importance_sampler_on_a_run_with_an_estimator():
    calls = []

    def estimator(x_t, level):
        calls.append(x_t.shape)
        return torch.linspace(0, 1, x_t.shape[1]).expand(x_t.shape[0], -1)

    run = random_run(importance=estimator)
    result = generate(run, "ab", SamplerSettings(sampler="importance", steps=6), num_samples=2, seed=0, record=True)
    assert calls and all(257 not in s.ids for s in result.samples)
    assert result.trajectory[0][0].importance is not None


def test_ar_generation_uses_the_kv_cache_and_matches_full_recompute():
    run = random_run("ar")
    result = generate(run, "The", SamplerSettings(temperature=0.0), length=28, seed=0)  # fills the context of 32
    assert result.samples[0].text.startswith("The") and result.nfe == 28  # the prompt, then one per fed token
    # Greedy decoding without a cache, re-reading the whole sequence each time, gives the same tokens.
    seq = [256] + list(b"The")
    with torch.no_grad():
        for _ in range(28):
            seq.append(int(run.model(torch.tensor([seq]))[0, -1].argmax()))
    assert seq[1:] == result.samples[0].ids
    longer = generate(run, "The", SamplerSettings(), length=70, num_samples=2, seed=0)  # beyond one context
    assert longer.nfe == 70 and all(len(s.ids) == 73 for s in longer.samples)
    with pytest.raises(AtatError, match="cannot fill"):
        generate(run, "a [MASK] b")


class UniformJudge(Judge):
    name, bos_id, seq_len, device = "uniform", 0, 64, torch.device("cpu")

    def encode(self, text):
        return [1 + b % 9 for b in text.encode()]

    def logits(self, ids):
        return torch.zeros(*ids.shape, 10)


def test_quality_metrics():
    assert unigram_entropy([1, 1, 2, 2]) == pytest.approx(math.log(2))
    assert unigram_entropy([5, 5, 5]) == 0.0 and unigram_entropy([]) == 0.0
    result = generative_perplexity(UniformJudge(), ["ctx", ""], ["abcd", "xy"])
    assert result["gen_ppl"] == pytest.approx(10.0) and result["judge_tokens"] == 6
    assert result["per_sample"] == [pytest.approx(10.0), pytest.approx(10.0)]


def test_score_generation_reports_entropy_with_gen_ppl(dit_run):
    result = generate(dit_run, "ab", SamplerSettings(steps=4), num_samples=2, seed=0)
    quality = score_generation(result, UniformJudge())
    assert len(quality["per_sample_entropy"]) == 2 and quality["entropy"] > 0
    tokens = sum(len(s.continuation.encode()) for s in result.samples)
    assert quality["judge_tokens"] == tokens and quality["gen_ppl"] == pytest.approx(10.0)


def test_progress_moves_block_by_block_within_a_long_sample(dit_run):
    calls = []
    generate(dit_run, "Go", SamplerSettings(steps=2), length=70, block_size=16, num_samples=2, batch_size=2, seed=0,
             progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert all(total == 2 for _, total in calls) and done == sorted(done) and done[-1] == 2
    assert len({d for d in done if 0 < d < 2}) >= 3  # several blocks reported before the batch ends
