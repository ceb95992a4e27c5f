"""Load the model of a run: its config, its corpus and tokenizer, and its (EMA) weights.

A model comes from a training checkpoint (`best.pt`, `step-*.pt`) or from an exported folder
(hf_folder.py). `read_source` turns either into the same `RunSource`, and `load_run` builds the
model from that, so both go through the same checks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from atat_cli.config import RunConfig, config_from_dict
from atat_cli.data import CORPORA, PreparedData, Tokenizer, ensure_prepared, load_tokenizer
from atat_cli.errors import AtatError
from atat_cli.models import build_model, importance_estimator_of
from atat_cli.paths import data_root
from atat_cli.runs.folders import resolve_checkpoint
from atat_cli.runs.hf_folder import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, read_export
from atat_cli.training.checkpoint import load_checkpoint


@dataclass
class RunSource:
    """What a model is built from, whichever file it was read from."""

    path: Path  # the checkpoint, or an export's model.safetensors
    config: dict  # RunConfig.to_dict()
    # the corpus: name, path, vocab_size, eos_id, tokenizer_fingerprint (older checkpoints: fewer); an
    # imported model (runs/import_mdlm.py) has none of its own and says imported_from
    data: dict
    weights: dict[str, torch.Tensor]  # the model's state dict
    step: int
    averaged: bool  # whether `weights` are the EMA ones
    exported: bool  # an exported folder (its own tokenizer/) rather than a training checkpoint

    def describe(self) -> str:
        return str(self.path.parent / CONFIG_FILE) if self.exported else f"checkpoint {self.path}"


def read_source(path: Path, use_ema: bool = True) -> RunSource:
    """The RunSource in a checkpoint file or an export's model.safetensors (see resolve_checkpoint).
    use_ema: the EMA weights where there are any; an export holds the one set it was written with."""
    path = Path(path)
    if path.name == WEIGHTS_FILE:
        config, weights = read_export(path.parent)
        averaged = config["atat_weights"] == "ema"
        if averaged and not use_ema:
            raise AtatError(f"{path.parent} holds only the EMA weights",
                            "export the run's checkpoint again with --no-ema for the raw ones")
        return RunSource(path, config["atat_run_config"], config["atat_data"], weights, config["atat_step"],
                         averaged, exported=True)
    state = load_checkpoint(path)
    weights, averaged = dict(state["model"]), bool(use_ema and state.get("ema"))
    if averaged:
        weights.update(state["ema"]["shadow"])
    return RunSource(path, state["config"], state["data"], weights, state["step"], averaged, exported=False)


class RunCorpus:
    """The corpus a run was trained on, as its checkpoint records it, and the run's tokenizer.

    Sampling needs only the vocabulary and the tokenizer; an export carries its own tokenizer, so
    it samples where the corpus is absent. Evaluation needs the token streams: `prepared` opens
    the corpus (by its recorded path, else under the data root, else prepared again by name) and
    checks that its tokenizer is the run's. A checkpoint's tokenizer lives in its corpus, so for
    a checkpoint `load_run` opens the corpus at once.
    """

    def __init__(self, info: dict, origin: str, export: Path | None = None):
        self.info = info
        self.origin = origin  # "run FOLDER" or "export FOLDER", for messages
        self.export = export  # the exported folder whose tokenizer/ is the run's, or None
        self._tokenizer: Tokenizer | None = None

    def __repr__(self):
        return f"RunCorpus({self.name!r}, vocab_size={self.vocab_size})"

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def vocab_size(self) -> int:
        return self.info["vocab_size"]

    @property
    def eos_id(self) -> int:
        return self.info["eos_id"] if "eos_id" in self.info else self.prepared.eos_id

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.info.get("tokenizer_fingerprint") or self.prepared.tokenizer_fingerprint

    @property
    def tokenizer_name(self) -> str:
        """What `--tokenizer` prepares another corpus with the run's tokenizer: bytes, bpe or a hub name."""
        recorded = self.info.get("tokenizer") or {}
        return recorded["name"] if "name" in recorded else self.prepared.meta["tokenizer"]["name"]

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_folder() / TOKENIZER_DIR)
        return self._tokenizer

    def tokenizer_folder(self) -> Path:
        """The folder whose tokenizer/ holds the run's tokenizer: the export, or the prepared corpus."""
        return self.export if self.export is not None else self.prepared.path

    @functools.cached_property
    def prepared(self) -> PreparedData:
        info, origin = self.info, self.origin
        data_path = Path(info["path"]) if info.get("path") else None
        if data_path is None or not (data_path / "meta.json").is_file():  # moved machine or cache: the data root
            data_path = data_root() / info["name"]
        if (data_path / "meta.json").is_file():
            data = PreparedData(data_path)
        elif info.get("imported_from") and self.export is not None:  # atat import: trained elsewhere
            raise AtatError(f"{origin} was imported from {info['imported_from']}, so it has no corpus of its own",
                            f"prepare one with its tokenizer and pass it: atat data fetch wikitext103 --tokenizer "
                            f"{self.export / TOKENIZER_DIR}, then atat eval {self.export} --data wikitext103")
        elif info["name"] not in CORPORA:
            raise AtatError(f"corpus '{info['name']}', which {origin} was trained on, is not prepared here "
                            f"(nothing at {data_path}), and it was made from local files",
                            f"prepare it from the same files: atat data fetch FILES... --name {info['name']}"
                            + (" (sampling needs no corpus)" if self.export else ""))
        else:
            kind = (info.get("tokenizer") or {}).get("name")  # known for exports: prepare with the run's tokenizer
            data = ensure_prepared(info["name"], tokenizer=kind if kind != "bpe" else None)
        fingerprint = info.get("tokenizer_fingerprint")  # absent in checkpoints written before it was stored
        if fingerprint is not None and data.tokenizer_fingerprint != fingerprint:
            raise AtatError(f"prepared data '{info['name']}' has another tokenizer than the one {origin} was "
                            "trained with", "the corpus was prepared again since; retrain, or restore the corpus folder "
                            "the run was trained on")
        if data.vocab_size != info["vocab_size"]:
            raise AtatError(f"prepared data '{info['name']}' has vocabulary {data.vocab_size}, {origin} was trained "
                            f"with {info['vocab_size']}",
                            f"re-prepare the data the run was trained on (atat data fetch {info['name']} --force)")
        return data

    # What evaluation reads, from the prepared corpus.
    @property
    def meta(self) -> dict:
        return self.prepared.meta

    def blocks(self, split: str, seq_len: int):
        return self.prepared.blocks(split, seq_len)

    def bytes_per_token(self, split: str) -> float:
        return self.prepared.bytes_per_token(split)


@dataclass
class TrainedRun:
    cfg: RunConfig
    model: torch.nn.Module
    # The run's corpus and tokenizer: vocab_size, eos_id, tokenizer(), and blocks() for evaluation
    # (a RunCorpus; anything with those will do).
    data: RunCorpus
    step: int
    checkpoint: Path
    # ATAT runs: the importance estimator, called as importance(x_t, noise_level) -> (B, T) in
    # [0, 1] (x_t may contain the mask id). None for MDLM and AR runs.
    importance: torch.nn.Module | None = None
    averaged: bool = True  # whether the weights are the EMA ones


def load_run(run: str | Path | None, device: torch.device, use_ema: bool = True) -> TrainedRun:
    """The model of a run with its EMA weights (what evaluation and sampling use), in eval mode.
    `run`: a run folder, a checkpoint, an exported folder (or its model.safetensors), or None for
    the newest run."""
    source = read_source(resolve_checkpoint(run), use_ema)
    try:
        cfg = config_from_dict(source.config)
    except AtatError as e:
        raise AtatError(f"{source.describe()} has an incompatible config: {e.message}") from e
    folder = source.path.parent
    corpus = RunCorpus(source.data, f"export {folder}" if source.exported else f"run {folder}",
                       export=folder if source.exported else None)
    if not source.exported:
        corpus.prepared  # noqa: B018 - the tokenizer is in the corpus: a missing or changed one fails now
    model = build_model(cfg, corpus.vocab_size)
    try:
        model.load_state_dict(source.weights)
    except RuntimeError as e:
        if source.exported:
            raise AtatError(f"{source.path} does not match the model {source.describe()} describes",
                            f"export the run again: atat export RUN {source.path.parent} --force") from e
        raise AtatError(f"checkpoint {source.path} does not match the model its config describes") from e
    model.to(device).eval()
    return TrainedRun(cfg, model, corpus, source.step, source.path, importance=importance_estimator_of(model),
                      averaged=source.averaged)
