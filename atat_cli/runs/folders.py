"""Run folders, the unit users pass around: which checkpoint a RUN argument means, and where a
new training writes.

RUN may be a run folder (best.pt, else the newest step-*.pt), a checkpoint file, an exported
folder (`atat export`: its model.safetensors), or omitted (the newest run under runs/). Every
command that takes RUN goes through here.
"""

from __future__ import annotations

from pathlib import Path

from atat_cli.errors import AtatError
from atat_cli.paths import runs_root
from atat_cli.runs.hf_folder import WEIGHTS_FILE, looks_exported
from atat_cli.training.checkpoint import latest_checkpoint


def _run_checkpoint(run_dir: Path) -> Path | None:
    best = run_dir / "best.pt"
    if best.is_file():
        return best
    latest = latest_checkpoint(run_dir)
    if latest is None and looks_exported(run_dir):  # loading it says what an incomplete one lacks
        return run_dir / WEIGHTS_FILE
    return latest


def resolve_checkpoint(run: str | Path | None) -> Path:
    if run is None:
        root = runs_root()
        candidates = [(p.stat().st_mtime, p) for d in root.glob("*")
                      if d.is_dir() and (p := _run_checkpoint(d)) and p.is_file()]
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


def resolve_run_folder(run: str | Path | None) -> Path:
    """The folder of RUN without loading a model: a folder as given, a checkpoint's folder, or the
    newest run's folder."""
    if run is not None and Path(run).is_dir():
        return Path(run)
    return resolve_checkpoint(run).parent


def default_run_dir(method: str, size: str, data: str, resume: bool) -> Path:
    """runs/<method>-<size>-<data>, numbered -2, -3, ... so a new training never reuses a finished
    run's folder; with resume, the newest of them."""
    base = runs_root() / f"{method}-{size}-{data}"
    numbered = (p for p in base.parent.glob(f"{base.name}-*") if p.name[len(base.name) + 1:].isdigit())
    taken = [base] + sorted(numbered, key=lambda p: int(p.name.rsplit("-", 1)[1]))
    taken = [p for p in taken if p.is_dir() and latest_checkpoint(p) is not None]
    if resume:
        return taken[-1] if taken else base
    if not taken:
        return base
    last = taken[-1]
    n = int(last.name.rsplit("-", 1)[1]) + 1 if last != base else 2
    return base.parent / f"{base.name}-{n}"
