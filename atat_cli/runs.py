"""A run folder is the unit users pass around: resolve RUN arguments and load trained models.

RUN may be a run folder (best.pt, else the newest step-*.pt), a checkpoint file, or omitted
(the newest run under runs/). Every command that takes RUN goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from atat_cli.config import RunConfig, config_from_dict
from atat_cli.errors import AtatError
from atat_cli.paths import data_root, runs_root
from atat_cli.training.checkpoint import latest_checkpoint, load_checkpoint


def _run_checkpoint(run_dir: Path) -> Path | None:
    best = run_dir / "best.pt"
    return best if best.is_file() else latest_checkpoint(run_dir)


def resolve_checkpoint(run: str | Path | None) -> Path:
    if run is None:
        root = runs_root()
        candidates = [(p.stat().st_mtime, p) for d in root.glob("*") if d.is_dir() and (p := _run_checkpoint(d))]
        if not candidates:
            raise AtatError(f"no trained run found under {root}/", "train one first: atat train --size tiny")
        return max(candidates)[1]
    path = Path(run)
    if path.is_dir():
        ckpt = _run_checkpoint(path)
        if ckpt is None:
            raise AtatError(f"run folder {path} holds no checkpoint", "train it first, or pass a checkpoint file")
        return ckpt
    if not path.exists():
        raise AtatError(f"no such run folder or checkpoint: {path}")
    return path


@dataclass
class TrainedRun:
    cfg: RunConfig
    model: torch.nn.Module
    data: PreparedData  # noqa: F821 - imported lazily
    step: int
    checkpoint: Path
    # ATAT runs: the importance estimator, called as importance(x_t, noise_level) -> (B, T) in
    # [0, 1] (x_t may contain the mask id). None for MDLM and AR runs.
    importance: torch.nn.Module | None = None


def load_run(run: str | Path | None, device: torch.device, use_ema: bool = True) -> TrainedRun:
    """The model of a run with its EMA weights (what evaluation and sampling use), in eval mode."""
    from atat_cli.data import PreparedData, ensure_prepared
    from atat_cli.models import build_model, importance_estimator_of

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
