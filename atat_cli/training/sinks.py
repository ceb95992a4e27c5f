"""Where training metrics go: metrics.jsonl always; TensorBoard and Weights & Biases on request.

Only rank 0 creates sinks. The optional trackers are the `tracking` extra; asking for one that
is not installed is a clear error before anything is opened, not a crash at the first log line.

The trackers get the numeric fields of each metrics.jsonl record, named by section:
`train/<key>` for a training record (`train/loss`, `train/lr`, ...) and `val/<key>` for a
validation one (`val_nelbo` becomes `val/nelbo`), at the record's step.

- TensorBoard: event files in RUN/tensorboard. A resume goes back to its checkpoint, as
  metrics.jsonl does: the steps logged after it (by the run that was stopped) are purged, so each
  step is shown once.
- W&B: its files go to RUN/wandb (or $WANDB_DIR/wandb when WANDB_DIR is set); the W&B run id is
  kept in RUN/wandb-run-id, so a resume continues the same W&B run. W&B cannot take a step back:
  the steps it already holds are not sent again (a resume is exact, so they hold the same
  values). WANDB_MODE=offline logs locally only (`wandb sync` uploads later); W&B's messages go
  to stderr, so `atat train --json` keeps a clean stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from atat_cli.errors import AtatError

TRACKING_HINT = 'pip install -e ".[tracking]"'
WANDB_ID_FILE = "wandb-run-id"


class MetricSinks:
    def __init__(self, run_dir: Path, train_cfg, config_dict: dict, start_step: int = 0):
        """start_step: the step training continues from (0 for a new run). Records of later steps
        (written after the checkpoint that a resume goes back to) are dropped, so that every step
        appears once in metrics.jsonl; the trackers follow (see the module docstring)."""
        run_dir = Path(run_dir)
        # Both imports first: a missing package fails before any file is opened.
        summary_writer = _import_tensorboard() if train_cfg.tensorboard else None
        wandb = _import_wandb() if train_cfg.wandb_project else None
        path = run_dir / "metrics.jsonl"
        logged_up_to = keep_records_up_to(path, start_step)
        self.jsonl = open(path, "a")
        self.tensorboard = None
        self.wandb = None
        self.wandb_after = start_step  # W&B gets the records of later steps only
        try:
            if summary_writer is not None:
                # purge_step: TensorBoard hides this step and all later ones of the earlier files.
                self.tensorboard = summary_writer(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
            if wandb is not None:
                resumed = start_step > 0 and (run_dir / WANDB_ID_FILE).is_file()
                self.wandb = _start_wandb(wandb, run_dir, train_cfg.wandb_project, config_dict, resumed)
                if resumed:
                    self.wandb_after = max(start_step, logged_up_to)
        except BaseException:
            self.close()
            raise

    def write(self, record: dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        step = record["step"]
        scalars = tracker_scalars(record)
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()  # a live TensorBoard sees each record, as metrics.jsonl does
        if self.wandb is not None and step > self.wandb_after:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        """Close every sink. Called during an exception (the trainer closes in a `finally`), it
        marks the W&B run as failed."""
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if sys.exc_info()[0] is not None else 0)
            self.wandb = None


def tracker_scalars(record: dict) -> dict[str, float]:
    """The numeric fields of a metrics.jsonl record, named for the trackers: `val_nelbo` ->
    `val/nelbo`, `loss` -> `train/loss`. Labels (strings) and missing values (None) are left out."""
    scalars = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        scalars[f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"] = value
    return scalars


def _import_tensorboard():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise AtatError("train.tensorboard needs the tensorboard package, which is not installed",
                        TRACKING_HINT) from e
    return SummaryWriter


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise AtatError("train.wandb_project needs the wandb package, which is not installed", TRACKING_HINT) from e
    return wandb


def _start_wandb(wandb, run_dir: Path, project: str, config_dict: dict, resumed: bool):
    """A W&B run for this run folder: the same W&B run again on a resume (its id is kept in the
    run folder), a new one otherwise; its files in the run folder unless WANDB_DIR says otherwise."""
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resumed else secrets.token_hex(4)
    files_dir = None if os.environ.get("WANDB_DIR") else str(run_dir)
    try:
        run = wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow", config=config_dict,
                         dir=files_dir, settings=wandb.Settings(quiet=True))
    except Exception as e:  # wandb raises its own types (no login, no network, a bad project name)
        raise AtatError(f"W&B could not start a run: {e}",
                        "run `wandb login`, or set WANDB_MODE=offline to log to the run folder only") from e
    id_file.write_text(run_id + "\n")
    return run


def keep_records_up_to(path: Path, step: int) -> int:
    """Rewrite a metrics.jsonl (atomically) without the records after `step`, and without a line
    torn by a kill mid-write. Returns the last step the file held before (0 for none)."""
    if not path.is_file():
        return 0
    kept, last = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            last = max(last, record["step"])
            if record["step"] <= step:
                kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
    return last
