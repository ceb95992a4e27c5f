"""Typed config: presets, precedence, strict keys, validation."""

import pytest

from atat_cli.config import describe, load_config, parse_override
from atat_cli.errors import AtatError


def test_size_presets_and_precedence(tmp_path):
    cfg = load_config("small")
    assert (cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads) == (12, 768, 12)  # MDLM small
    tiny = load_config("tiny")
    assert (tiny.model.n_layers, tiny.model.d_model) == (8, 256)
    f = tmp_path / "c.yaml"
    f.write_text("size: test\noptim: {lr: 0.01}\ntrain: {batch_size: 3}\n")
    cfg = load_config(None, None, f, ["optim.lr=0.02"])
    assert cfg.size == "test" and cfg.model.d_model == 64  # the file's size preset
    assert cfg.train.batch_size == 3  # file beats preset
    assert cfg.optim.lr == 0.02  # --set beats file


def test_override_parsing_and_types():
    assert parse_override("train.seed=3") == {"train": {"seed": 3}}
    cfg = load_config("test", overrides=["optim.lr=1", "diffusion.antithetic=false"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.diffusion.antithetic is False


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", "unknown config key 'train.bogus'"),
    ("nosection.x=1", "unknown config key 'nosection'"),
    ("train.max_steps=0", "max_steps must be at least 1"),
    ("train.batch_size=abc", "expects int"),
    ("model.n_heads=3", "divisible"),
    ("diffusion.schedule=sqrt", "unknown schedule"),
    ("train.precision=fp8", "unknown precision"),
    ("noequals", "key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(AtatError, match=message):
        load_config("test", overrides=[override])


def test_unknown_size_and_method():
    with pytest.raises(AtatError, match="unknown size 'huge'"):
        load_config("huge")
    with pytest.raises(AtatError, match="unknown method"):
        load_config("test", "gan")


def test_every_field_is_documented():
    for key, _, help_text in describe():
        assert help_text, f"{key} has no help text"


@pytest.mark.parametrize("override, message", [
    ("model.cond_dim=0", "model.cond_dim must be at least 1"),
    ("model.mlp_ratio=-1", "model.mlp_ratio must be > 0"),
    ("train.seed=-3", "train.seed must be >= 0"),
    ("optim.lr=.inf", "'optim.lr' must be a finite number"),
    ("optim.lr=.nan", "'optim.lr' must be a finite number"),
    ("model.n_heads=0", "must be divisible by model.n_heads"),  # checked before the head width divides by it
])
def test_values_that_would_fail_later_are_refused_with_their_name(override, message):
    with pytest.raises(AtatError, match=message):
        load_config("test", overrides=[override])
