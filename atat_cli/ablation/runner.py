"""Run a grid: every variant x seed trained to the same token budget, then evaluated alike.

Resumable: a finished run (its last checkpoint is at the planned step) is not trained again, an
interrupted one resumes from its checkpoint, and an evaluation is cached in the run folder
(`eval.json`, keyed by step and evaluation settings) so re-running a grid redoes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from atat_cli.ablation.grid import Grid
from atat_cli.evaluation.report import evaluate_run
from atat_cli.training import Trainer
from atat_cli.training.checkpoint import STEP_PATTERN, latest_checkpoint


@dataclass
class RunRecord:
    variant: str
    method: str
    seed: int
    run_dir: Path
    steps: int
    tokens: int
    train_seconds: float
    tokens_per_s: float | None
    evaluation: dict
    curve: list[tuple[int, float]]  # (tokens seen, validation loss) during training


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _checkpoint_step(run_dir: Path) -> int:
    path = latest_checkpoint(run_dir)
    return int(STEP_PATTERN.match(path.name).group(1)) if path else 0


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_grid(grid: Grid, *, size: str, data: str, tokens: int, seeds: int, out: Path, mc: int = 4,
             split: str = "valid", overrides: list[str] = (), log=print, progress: bool = True) -> list[RunRecord]:
    out = Path(out)
    plans = []
    for variant in grid.variants:  # resolve every config before anything trains
        probe = variant.resolve(size, [f"data.name={data}", *overrides])
        tokens_per_step = probe.train.batch_size * probe.train.grad_accum * probe.model.seq_len
        steps = max(1, tokens // tokens_per_step)
        for seed in range(seeds):
            common = [f"data.name={data}", f"train.max_steps={steps}", f"train.seed={seed}",
                      f"train.eval_every={max(1, steps // 8)}", f"train.save_every={max(1, steps // 4)}", *overrides]
            plans.append((variant, seed, steps, tokens_per_step, variant.resolve(size, common)))

    records = []
    for i, (variant, seed, steps, tokens_per_step, cfg) in enumerate(plans, 1):
        run_dir = out / variant.name / f"seed{seed}"
        done = _checkpoint_step(run_dir)
        bookkeeping = _read_json(run_dir / "ablate.json")
        if done >= steps:
            log(f"[{i}/{len(plans)}] {variant.name} seed {seed}: finished earlier, skipped")
        else:
            log(f"[{i}/{len(plans)}] {variant.name} seed {seed}: {'resuming at step ' + str(done) if done else 'training'}"
                f" to {steps} steps ({steps * tokens_per_step:,} tokens)")
            start = time.time()
            Trainer(cfg, run_dir, resume=done > 0, progress=progress, log=log).run()
            bookkeeping["train_seconds"] = bookkeeping.get("train_seconds", 0.0) + time.time() - start
            (run_dir / "ablate.json").write_text(json.dumps(bookkeeping))
        key = {"step": steps, "mc": mc, "split": split, "seed": 0}
        cached = _read_json(run_dir / "eval.json")
        if cached.get("key") == key:
            evaluation = cached["result"]
        else:
            evaluation = evaluate_run(run_dir, split=split, mc=mc, seed=0, progress=progress)
            (run_dir / "eval.json").write_text(json.dumps({"key": key, "result": evaluation}))
        metrics = _metrics(run_dir)
        speeds = [r["tokens_per_s"] for r in metrics if "tokens_per_s" in r]
        curve = [(r["step"] * tokens_per_step, r["val_nelbo"]) for r in metrics if "val_nelbo" in r]
        records.append(RunRecord(variant.name, cfg.method, seed, run_dir, steps, steps * tokens_per_step,
                                 bookkeeping.get("train_seconds", 0.0), sum(speeds) / len(speeds) if speeds else None,
                                 evaluation, curve))
    return records
