"""Networks: shapes, causality, KV cache, and that each objective can fit one batch."""

import math

import pytest
import torch

from atat_cli.config import load_config
from atat_cli.evaluation import evaluate_likelihood
from atat_cli.models import ARModel, DiT, build_model
from atat_cli.objectives import build_objective

V = 40


def _cfg(method="mdlm"):
    return load_config("test", method, overrides=["train.precision=fp32"])


def test_dit_shapes_and_zero_init_output():
    torch.manual_seed(0)
    cfg = _cfg()
    model = DiT(cfg.model, V)
    x = torch.randint(0, V + 1, (3, cfg.model.seq_len))
    logits = model(x, torch.rand(3))
    assert logits.shape == (3, cfg.model.seq_len, V + 1)
    assert torch.all(logits == 0)  # zero-initialised head: uniform predictions at the start
    assert model.mask_id == V


def test_dit_is_time_conditioned_and_bidirectional():
    torch.manual_seed(0)
    model = DiT(_cfg().model, V)
    for p in model.parameters():  # leave the zero init so the output depends on the input
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randint(0, V, (1, 16))
    base = model(x, torch.tensor([0.5]))
    assert not torch.allclose(base, model(x, torch.tensor([0.9])))
    x2 = x.clone()
    x2[0, -1] = (x2[0, -1] + 1) % V
    assert not torch.allclose(base[0, 0], model(x2, torch.tensor([0.5]))[0, 0])  # position 0 sees the future


def test_ar_is_causal_and_kv_cache_matches():
    torch.manual_seed(0)
    model = ARModel(_cfg("ar").model, V).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randint(0, V, (2, 12))
    full = model(x)
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % V
    assert torch.allclose(full[:, :-1], model(x2)[:, :-1], atol=1e-5)
    caches = [{} for _ in model.blocks]
    prefix = model(x[:, :5], caches)
    steps = [model(x[:, i : i + 1], caches) for i in range(5, 12)]
    cached = torch.cat([prefix] + steps, dim=1)
    assert torch.allclose(cached, full, atol=1e-4)


def _overfit(method, steps=300):
    torch.manual_seed(0)
    cfg = _cfg(method)
    model = build_model(cfg, V)
    objective = build_objective(cfg, V, eos_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (1, cfg.model.seq_len)).repeat(8, 1)  # one sequence to memorise
    before = _batch_bound(model, cfg, x0)
    losses = []
    for _ in range(steps):
        loss, _ = objective.loss(model, x0, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, before, _batch_bound(model, cfg, x0)


def _batch_bound(model, cfg, x0):
    """NELBO (or NLL) of the batch with many fixed time samples: a low-noise measure of fit."""
    raw = evaluate_likelihood(model, x0.numpy(), method=cfg.method, diffusion_cfg=cfg.diffusion, mask_id=V,
                              bos_id=0, mc=32, batch_size=8, seed=0)
    return raw["nats"] / raw["tokens"]


@pytest.mark.slow
def test_mdlm_overfits_one_batch():
    losses, before, after = _overfit("mdlm")
    # start at the uniform prediction: E[w(t) * mask_rate(t)] * log V = log V for log-linear
    assert abs(before - math.log(V)) < 0.1
    # rotary-only positions cannot be told apart when everything is masked, so the bound cannot
    # reach zero; it must still fall far below the uniform prediction
    assert after < 0.4 * before


@pytest.mark.slow
def test_ar_overfits_one_batch():
    losses, before, after = _overfit("ar")
    assert abs(losses[0] - math.log(V)) < 1e-4
    assert after < 0.1 * before
