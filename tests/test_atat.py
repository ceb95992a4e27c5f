"""ATAT: adaptive masking keeps the schedule's rate, the curriculum, the objective's switches."""

import json

import pytest
import torch

from atat_cli.atat import Curriculum, mask_probabilities
from atat_cli.config import CurriculumConfig, load_config
from atat_cli.diffusion import mask_tokens
from atat_cli.errors import AtatError
from atat_cli.evaluation import evaluate_likelihood
from atat_cli.models import build_model, importance_estimator_of
from atat_cli.objectives import build_objective, importance_targets
from atat_cli.training import Trainer

from conftest import FAST

STRATEGIES = ["uniform", "importance", "inverse", "position"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0, 10.0])
def test_masking_rate_equals_schedule(strategy, temperature):
    g = torch.Generator().manual_seed(0)
    B, T = 64, 256
    importance = torch.rand(B, T, generator=g) ** 3  # skewed, like real scores
    rate = torch.linspace(0.01, 0.99, B)
    p = mask_probabilities(importance, rate, strategy, temperature)
    assert torch.all((p >= 0) & (p <= 1))
    # exact in expectation: the per-sequence mean probability is the scheduled rate
    assert torch.allclose(p.mean(dim=1), rate, atol=1e-6)
    # and realised: the masked fraction over 20 draws is within 4 standard deviations
    draws = torch.stack([mask_tokens(torch.zeros(B, T, dtype=torch.long), p, 1, g)[1].float() for _ in range(20)])
    realised = draws.mean(dim=(0, 2))
    sd = (p * (1 - p)).sum(dim=1).sqrt() / (T * 20 ** 0.5)
    assert torch.all((realised - rate).abs() <= 4 * sd + 1e-9)


def test_importance_order_and_infinite_temperature():
    importance = torch.rand(8, 100)
    rate = torch.full((8,), 0.4)
    more = mask_probabilities(importance, rate, "importance", 0.5)
    less = mask_probabilities(importance, rate, "inverse", 0.5)
    assert torch.all(more.argsort(dim=1) == importance.argsort(dim=1))  # monotone in importance
    assert torch.all(less.argsort(dim=1) == importance.argsort(dim=1).flip(1))
    flat = mask_probabilities(importance, rate, "importance", 1e6)
    assert torch.allclose(flat, rate[:, None].expand_as(flat), atol=1e-6)  # T -> inf: uniform
    sharp = mask_probabilities(importance, rate, "importance", 1e-4)
    top = importance >= importance.quantile(0.6, dim=1, keepdim=True)
    assert (sharp[top] > 0.99).float().mean() > 0.95  # T -> 0: the top 40% are masked


def test_curriculum_stages_and_weights():
    cur = Curriculum(CurriculumConfig())
    assert [cur.stage(p) for p in (0.0, 0.1, 0.5, 0.79, 0.95, 1.0)] == ["easy", "easy", "medium", "medium", "hard", "hard"]
    levels = [cur.level(i / 1000) for i in range(1001)]
    assert max(abs(a - b) for a, b in zip(levels, levels[1:])) < 0.05  # smooth transitions
    importance = torch.rand(16, 64)
    for progress in (0.05, 0.5, 0.95):
        w = cur.weights(importance, progress)
        assert torch.allclose(w.mean(dim=1), torch.ones(16), atol=1e-5)

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]

    assert corr(cur.weights(importance, 0.05), importance) < -0.9  # easy: low importance boosted
    assert torch.allclose(cur.weights(importance, 0.5), torch.ones(16, 64))
    assert corr(cur.weights(importance, 0.95), importance) > 0.9


def test_curriculum_plateau_advances_stage():
    cur = Curriculum(CurriculumConfig(plateau_patience=2))
    for loss in (3.0, 2.5, 2.6, 2.7):  # two validations without improvement
        cur.observe_validation(loss)
    assert cur.stage(0.05) == "medium"
    restored = Curriculum(CurriculumConfig(plateau_patience=2))
    restored.load_state_dict(cur.state_dict())
    assert restored.stage(0.05) == "medium"


def _atat(*overrides, preset="atat/seed"):
    return load_config("test", "atat", config_file=preset, overrides=["train.precision=fp32", *overrides])


def test_importance_gradient_does_not_reach_main_loss():
    # lambda = 0: only the main loss; importance drives masking and weights yet gets no gradient
    torch.manual_seed(0)
    cfg = _atat("atat.importance.loss_weight=0")
    model = build_model(cfg, 50)
    estimator = importance_estimator_of(model)
    for p in estimator.parameters():
        torch.nn.init.normal_(p, std=0.1)  # non-trivial importance
    loss, _ = build_objective(cfg, 50, 0).loss(model, torch.randint(0, 50, (4, 32)), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in estimator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_all_off_atat_is_mdlm(atat_home):
    for method, preset in (("mdlm", None), ("atat", "atat/all_off")):
        cfg = load_config("test", method, config_file=preset, overrides=FAST + ["train.max_steps=6"])
        Trainer(cfg, atat_home / method, progress=False, log=lambda *a, **k: None).run()
    mdlm = [(r["step"], r["loss"]) for r in _metrics(atat_home / "mdlm") if "loss" in r]
    atat = [(r["step"], r["loss"]) for r in _metrics(atat_home / "atat") if "loss" in r]
    assert len(mdlm) == 6 and mdlm == atat


def test_estimator_never_changes_how_the_denoiser_trains(atat_home):
    """An estimator trained beside MDLM (uniform time, tokens and schedule) leaves the denoiser's
    training MDLM's, step for step, with clipping active: its gradient is clipped on its own."""
    common = FAST + ["train.max_steps=5", "optim.grad_clip=0.05"]
    for method, preset, extra in (("mdlm", None, []), ("atat", "atat/all_off", ["atat.importance.enabled=true"])):
        cfg = load_config("test", method, config_file=preset, overrides=common + extra)
        Trainer(cfg, atat_home / method, progress=False, log=lambda *a, **k: None).run()
    mdlm, atat = ([r for r in _metrics(atat_home / m) if "loss" in r] for m in ("mdlm", "atat"))
    assert all(r["grad_norm"] > 0.05 for r in mdlm)  # clipping acts on every step
    assert [r["nelbo"] for r in mdlm] == [r["nelbo"] for r in atat]
    assert "importance_loss" in atat[0]


def test_switches_change_what_they_say(atat_home):
    """Each switch shows up in the logged metrics of a short run."""
    runs = {
        "full": [],
        "no_curriculum": ["atat.curriculum.enabled=false"],
        "uniform": ["atat.masking.strategy=uniform"],
        "masked_target": ["atat.importance.target=masked"],
    }
    logged = {}
    for name, extra in runs.items():
        cfg = load_config("test", "atat", config_file="atat/seed", overrides=FAST + ["train.max_steps=10", *extra])
        Trainer(cfg, atat_home / name, progress=False, log=lambda *a, **k: None).run()
        logged[name] = [r for r in _metrics(atat_home / name) if "loss" in r]
    assert "curriculum_stage" in logged["full"][0] and "curriculum_stage" not in logged["no_curriculum"][0]
    assert logged["full"][0]["curriculum_stage"] == "easy" and logged["full"][-1]["curriculum_stage"] == "hard"
    for name in runs:
        assert "importance_loss" in logged[name][0] and "mask_rate_scheduled" in logged[name][0]
    # the two importance targets train the estimator differently
    assert logged["full"][0]["importance_loss"] != logged["masked_target"][0]["importance_loss"]


def test_atat_config_errors():
    with pytest.raises(AtatError, match="need atat.importance.enabled=true"):
        _atat("atat.importance.enabled=false")
    with pytest.raises(AtatError, match="unknown masking strategy"):
        _atat("atat.masking.strategy=random")
    with pytest.raises(AtatError, match="unknown importance target"):
        _atat("atat.importance.target=entropy")
    with pytest.raises(AtatError, match="temperature must be > 0"):
        _atat("atat.masking.temperature=0")
    with pytest.raises(AtatError, match="do not combine"):
        _atat("atat.time.proposal=adaptive")
    with pytest.raises(AtatError, match="need atat.importance.input=x0"):
        _atat("atat.importance.input=x_t")
    with pytest.raises(AtatError, match="sees x_t only"):
        _atat("atat.importance.input=x0", preset="atat/time")
    with pytest.raises(AtatError, match="need atat.importance.enabled=true"):
        _atat("atat.importance.enabled=false", preset="atat/tokens")
    with pytest.raises(AtatError, match="unknown token schedule"):
        _atat("atat.schedule.kind=zipf", preset="atat/frequency")
    with pytest.raises(AtatError, match="atat.tokens: keep"):
        _atat("atat.tokens.keep=0", preset="atat/tokens")


def _synthetic_batch(g, B, T):
    """Pairs (noise, f(noise)): noise tokens 8..39 uniform, then a predictable token noise % 8."""
    noise = torch.randint(8, 40, (B, T // 2), generator=g)
    return torch.stack([noise, noise % 8], dim=2).reshape(B, T)


def test_rank_target_orders_masked_losses_within_each_sequence():
    nll = torch.tensor([[0.3, 9.0, 0.1, 2.0], [5.0, 5.0, 1.0, 0.0]])
    masked = torch.tensor([[True, False, True, True], [False, False, True, False]])
    target, where = importance_targets(nll, masked, "rank")
    assert torch.equal(where, masked)
    # row 0: masked losses 0.3, 0.1, 2.0 rank 1, 0, 2 of 3; row 1: one masked token sits mid-way
    assert torch.allclose(target[0, [0, 2, 3]], torch.tensor([1.5, 0.5, 2.5]) / 3)
    assert target[1, 2] == 0.5
    loss_target, _ = importance_targets(nll, masked, "loss")
    assert torch.allclose(loss_target, 1 - torch.exp(-nll))
    masked_target, everywhere = importance_targets(nll, masked, "masked")
    assert torch.equal(masked_target, masked.float()) and bool(everywhere.all())


@pytest.mark.slow
@pytest.mark.parametrize("preset,target", [("atat/seed", "rank"), ("atat/seed", "loss"), ("atat/time", "loss")])
def test_estimator_learns_difficulty(preset, target):
    # Predictable tokens (0..7) follow from their left neighbour; noise tokens (8..39) do not.
    # After a short training the predicted importance must rank tokens like their measured loss
    # (the x0 estimator of the seeds' design, and the x_t estimator of the valid designs).
    torch.manual_seed(0)
    V = 40
    off = ["atat.curriculum.enabled=false"] if preset == "atat/seed" else []
    cfg = _atat(*off, "atat.importance.loss_weight=1.0", f"atat.importance.target={target}", preset=preset)
    model = build_model(cfg, V)
    objective = build_objective(cfg, V, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        objective.begin_step(step, 150)
        loss, _ = objective.loss(model, _synthetic_batch(g, 16, 32), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = _synthetic_batch(torch.Generator().manual_seed(1), 32, 32).numpy()
    raw = evaluate_likelihood(model, held_out, method="atat", diffusion_cfg=cfg.diffusion, mask_id=V, mc=2, seed=0)
    assert raw["importance_spearman"] > 0.4, raw["importance_spearman"]
