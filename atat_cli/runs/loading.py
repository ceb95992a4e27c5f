"""Load the model of a run: its config, its prepared corpus and its (EMA) weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from atat_cli.config import RunConfig, config_from_dict
from atat_cli.data import PreparedData, ensure_prepared
from atat_cli.errors import AtatError
from atat_cli.models import build_model, importance_estimator_of
from atat_cli.paths import data_root
from atat_cli.runs.folders import resolve_checkpoint
from atat_cli.training.checkpoint import load_checkpoint


@dataclass
class TrainedRun:
    cfg: RunConfig
    model: torch.nn.Module
    data: PreparedData
    step: int
    checkpoint: Path
    # ATAT runs: the importance estimator, called as importance(x_t, noise_level) -> (B, T) in
    # [0, 1] (x_t may contain the mask id). None for MDLM and AR runs.
    importance: torch.nn.Module | None = None


def load_run(run: str | Path | None, device: torch.device, use_ema: bool = True) -> TrainedRun:
    """The model of a run with its EMA weights (what evaluation and sampling use), in eval mode."""

    path = resolve_checkpoint(run)
    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
    except AtatError as e:
        raise AtatError(f"checkpoint {path} has an incompatible config: {e.message}") from e
    info = state["data"]
    data_path = Path(info["path"])
    if not (data_path / "meta.json").is_file():  # moved machine or cache: look in the data root
        data_path = data_root() / info["name"]
    data = PreparedData(data_path) if (data_path / "meta.json").is_file() else ensure_prepared(info["name"])
    fingerprint = info.get("tokenizer_fingerprint")  # absent in checkpoints written before it was stored
    if fingerprint is not None and data.tokenizer_fingerprint != fingerprint:
        raise AtatError(f"prepared data '{info['name']}' has another tokenizer than the one run {path.parent} was "
                        "trained with", "the corpus was prepared again since; retrain, or restore the corpus folder the run was "
                        "trained on")
    if data.vocab_size != info["vocab_size"]:
        raise AtatError(f"prepared data '{info['name']}' has vocabulary {data.vocab_size}, the checkpoint {info['vocab_size']}",
                        f"re-prepare the data the run was trained on (atat data fetch {info['name']} --force)")
    model = build_model(cfg, info["vocab_size"])
    weights = dict(state["model"])
    if use_ema and state.get("ema"):
        weights.update(state["ema"]["shadow"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise AtatError(f"checkpoint {path} does not match the model its config describes") from e
    model.to(device).eval()
    return TrainedRun(cfg, model, data, state["step"], path, importance=importance_estimator_of(model))
