"""The maths of masked diffusion: schedules, antithetic times, masking, SUBS, the NELBO."""

import math

import pytest
import torch

from atat_cli.diffusion import build_schedule, mask_tokens, masked_token_nll, sample_times, subs_log_probs
from atat_cli.errors import AtatError


def test_loglinear_formulas():
    s = build_schedule("loglinear", eps=1e-3)
    t = torch.tensor([0.1, 0.5, 0.9])
    sigma = -torch.log1p(-(1 - 1e-3) * t)
    # MDLM: masking probability 1 - exp(-sigma), weight sigma'(t) / expm1(sigma(t)) = 1/t
    assert torch.allclose(s.mask_rate(t), 1 - torch.exp(-sigma))
    dsigma = (1 - 1e-3) / (1 - (1 - 1e-3) * t)
    assert torch.allclose(s.loss_weight(t), dsigma / torch.expm1(sigma), rtol=1e-5)
    assert torch.allclose(s.loss_weight(t), 1 / t)


@pytest.mark.parametrize("name", ["loglinear", "cosine"])
def test_weight_matches_derivative_of_alpha(name):
    s = build_schedule(name, eps=1e-3)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    numeric = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.dalpha(t), numeric, rtol=1e-5)
    assert torch.allclose(s.loss_weight(t), -numeric / (1 - s.alpha(t)), rtol=1e-5)
    # masking rate rises from ~0 to ~1
    assert s.mask_rate(torch.tensor(1e-3)) < 0.01 and s.mask_rate(torch.tensor(1.0)) > 0.99


def test_cosine_formula():
    s = build_schedule("cosine", eps=1e-3)
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(s.alpha(t), 1e-3 + (1 - 1e-3) * torch.cos(math.pi / 2 * t))


def test_unknown_schedule():
    with pytest.raises(AtatError):
        build_schedule("sqrt")


def test_antithetic_times_cover_every_stratum():
    g = torch.Generator().manual_seed(0)
    n, eps = 64, 1e-3
    t = sample_times(n, eps, True, g, "cpu")
    u = (t - eps) / (1 - eps)
    strata = torch.floor(u * n).long().sort().values
    assert torch.equal(strata, torch.arange(n))  # exactly one time in each of the n strata
    assert t.min() >= eps and t.max() <= 1
    # and their spread is far smaller than i.i.d. sampling's on average
    iid_means = torch.stack([sample_times(n, eps, False, g, "cpu").mean() for _ in range(200)])
    anti_means = torch.stack([sample_times(n, eps, True, g, "cpu").mean() for _ in range(200)])
    assert anti_means.std() < iid_means.std() / 5


def test_mask_tokens_rate_and_id():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 50, (200, 100))
    x_t, masked = mask_tokens(x0, torch.tensor(0.3), mask_id=50, generator=g)
    assert abs(masked.float().mean().item() - 0.3) < 0.01
    assert torch.equal(x_t[masked], torch.full_like(x_t[masked], 50))
    assert torch.equal(x_t[~masked], x0[~masked])


def test_subs_never_predicts_mask_and_carries_unmasked():
    torch.manual_seed(0)
    V, mask_id = 10, 10
    logits = torch.randn(2, 6, V + 1) * 5
    logits[..., mask_id] = 100.0  # even a huge mask logit gets probability zero
    x_t = torch.tensor([[1, 10, 3, 10, 10, 2], [10, 10, 10, 10, 10, 10]])
    lp = subs_log_probs(logits, x_t, mask_id)
    probs = lp.exp()
    assert torch.all(probs[..., mask_id] == 0)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 6))
    unmasked = x_t != mask_id
    # point mass on the observed token
    assert torch.all(lp[unmasked].gather(-1, x_t[unmasked][:, None]) == 0)
    assert torch.all(probs[unmasked].max(-1).values == 1)


def test_masked_token_nll_equals_subs_gather():
    torch.manual_seed(1)
    V, mask_id = 12, 12
    x0 = torch.randint(0, V, (3, 8))
    masked = torch.rand(3, 8) < 0.5
    x_t = torch.where(masked, torch.full_like(x0, mask_id), x0)
    logits = torch.randn(3, 8, V + 1)
    nll = masked_token_nll(logits, x0, masked, mask_id)
    ref = -subs_log_probs(logits, x_t, mask_id).gather(-1, x0[..., None])[..., 0]
    assert torch.allclose(nll, ref, atol=1e-6)
    assert torch.all(nll[~masked] == 0)
