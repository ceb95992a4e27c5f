"""Export a run as a folder in the Hugging Face layout (config.json, model.safetensors, tokenizer/;
see hf_folder.py), which every command that takes RUN accepts.

    from atat_cli.runs.export import export_run
    summary = export_run("runs/mdlm-tiny-pydocs", "shared/mdlm-tiny")
"""

from __future__ import annotations

from pathlib import Path

import torch

from atat_cli.errors import AtatError
from atat_cli.models import count_parameters
from atat_cli.runs.hf_folder import export_config, export_files, write_export
from atat_cli.runs.loading import load_run


def check_destination(out: Path, force: bool) -> bool:
    """Refuse a destination that is a file or holds anything but an earlier export (that one only
    with force); returns whether an earlier export is to be replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AtatError(f"{out} is a file", "pass a folder to export into (new or empty)")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    earlier = export_files(out) is not None
    if earlier and force:
        return True
    if earlier:
        raise AtatError(f"{out} already holds an export", "pass --force to replace it, or another folder")
    if force:
        raise AtatError(f"{out} is not empty and is not an atat export; --force replaces only an earlier export",
                        "pass a new or empty folder; nothing in it was changed")
    raise AtatError(f"{out} is not empty", "pass a new or empty folder; nothing in it was changed")


def export_run(run, out, *, ema: bool = True, force: bool = False) -> dict:
    """Write RUN's model (its EMA weights, or with ema=False the raw ones), config and tokenizer to
    the folder `out`. The model is loaded exactly as evaluation and sampling load it, so a run that
    does not load is not exported, and the corpus must be present (or preparable) for its tokenizer."""
    out = Path(out)
    replace = check_destination(out, force)  # before loading anything
    trained = load_run(run, torch.device("cpu"), use_ema=ema)
    corpus = trained.data
    tokenizer = corpus.tokenizer()
    info = {"name": corpus.name, "path": str(corpus.info.get("path", "")), "vocab_size": corpus.vocab_size,
            "eos_id": corpus.eos_id, "hash": corpus.info.get("hash"),
            "tokenizer_fingerprint": corpus.tokenizer_fingerprint,
            "tokenizer": {"kind": tokenizer.kind, "name": tokenizer.name}}
    weights = "ema" if trained.averaged else "raw"
    config = export_config(trained.cfg.to_dict(), info, trained.step, weights, type(trained.model).__name__)
    files = write_export(out, config, trained.model.state_dict(), corpus.tokenizer_folder(), replace=replace)
    return {"run": str(trained.checkpoint.parent), "checkpoint": str(trained.checkpoint), "out": str(out),
            "method": trained.cfg.method, "step": trained.step, "weights": weights,
            "parameters": count_parameters(trained.model), "tokenizer": f"{tokenizer.kind} ({tokenizer.name})",
            "files": files, "replaced": replace}
