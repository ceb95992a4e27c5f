"""Where training metrics go: metrics.jsonl always; TensorBoard and Weights & Biases on request.

Only rank 0 creates sinks. The optional trackers are the `tracking` extra; asking for one that
is not installed is a clear error before training starts, not a crash at the first log line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from atat_cli.errors import AtatError


class MetricSinks:
    def __init__(self, run_dir: Path, train_cfg, config_dict: dict, start_step: int = 0):
        """start_step: the step training continues from (0 for a new run). Records of later steps
        (written after the checkpoint that a resume goes back to) are dropped, so that every step
        appears once in metrics.jsonl."""
        path = Path(run_dir) / "metrics.jsonl"
        keep_records_up_to(path, start_step)
        self.jsonl = open(path, "a")
        self.tensorboard = None
        self.wandb = None
        if train_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise AtatError("train.tensorboard needs the tensorboard package",
                                'pip install -e ".[tracking]"') from e
            self.tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if train_cfg.wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise AtatError("train.wandb_project needs the wandb package", 'pip install -e ".[tracking]"') from e
            self.wandb = wandb.init(project=train_cfg.wandb_project, name=Path(run_dir).name, config=config_dict,
                                    dir=str(run_dir), resume="allow")

    def write(self, record: dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, record["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def keep_records_up_to(path: Path, step: int) -> None:
    """Rewrite a metrics.jsonl (atomically) without the records after `step`, and without a line
    torn by a kill mid-write."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
