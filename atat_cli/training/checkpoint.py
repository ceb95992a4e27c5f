"""Checkpoints: written atomically, rotated, and loaded with clear errors.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash mid-write never leaves a truncated file and never destroys the previous one.

A checkpoint holds tensors, numbers, strings and containers of them, nothing else, and is read
with `torch.load(weights_only=True)`: unpickling an arbitrary object can run arbitrary code, and a
run folder is something users share. A file that needs more than that is refused, unread.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path

import torch

from atat_cli.errors import AtatError

STEP_PATTERN = re.compile(r"^step-(\d+)\.pt$")


def save_atomic(state: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        # torch reports a full disk as a RuntimeError ("unexpected pos ...") from its zip writer
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "unexpected pos" in str(e):
            raise AtatError(f"no space left on the device while writing {path}",
                            "free some space and resume; the previous checkpoint is intact") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


TEMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)$")  # what save_atomic writes before the rename


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of saves that a dead process left half-written (gigabytes at
    `small`). Call it while holding the run's lock, so no live training is writing them."""
    removed = []
    for path in Path(run_dir).glob(".*.tmp-*"):
        m = TEMP_PATTERN.match(path.name)
        if m and not _process_alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Periodic checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("step-*.pt") if (m := STEP_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_step_checkpoint(state: dict, run_dir: Path, step: int, keep_last: int) -> Path:
    path = Path(run_dir) / f"step-{step:08d}.pt"
    save_atomic(state, path)
    for old in step_checkpoints(run_dir)[:-keep_last]:  # rotate only after the new one is safe
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    steps = step_checkpoints(run_dir)
    return steps[-1] if steps else None


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AtatError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the first global outside its allow-list; anything else is damage
        needed = re.search(r"GLOBAL ([\w.]+)", str(e))
        if needed is None:
            raise _unreadable(path, e) from e
        raise AtatError(f"refused to load {path}: it asks to import {needed.group(1)}, and an atat checkpoint "
                        "holds only tensors and plain data (unpickling objects can run code)",
                        "nothing from the file was run; load checkpoints only from sources you trust, "
                        "or retrain") from e
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise _unreadable(path, e) from e
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise AtatError(f"{path} is not an atat checkpoint (no model/config inside)")
    return state


def _unreadable(path: Path, e: Exception) -> AtatError:
    return AtatError(f"corrupt or unreadable checkpoint {path}: {type(e).__name__}",
                     "retrain, or point at another checkpoint of the run (step-*.pt, best.pt)")
