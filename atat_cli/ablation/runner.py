"""Run a grid: every variant x seed trained to the same token budget, then evaluated alike.

Resumable: a finished run (its last checkpoint is at the planned step) is not trained again, an
interrupted one resumes from its checkpoint, and an evaluation is cached in the run folder
(`eval.json`, keyed by step and evaluation settings) so re-running a grid redoes nothing.

Runs train one after another, or, with several workers (by default one per visible GPU), in
that many processes at once, each pinned to its own GPU through CUDA_VISIBLE_DEVICES and taking
the next pending run when it finishes one. Evaluation follows in this process, run by run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from atat_cli.ablation.grid import Grid
from atat_cli.errors import AtatError
from atat_cli.runs import evaluate_run
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
    epochs: int | None = None  # passes over data.unique_tokens, for a data-constrained variant


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


def default_workers() -> int:
    """One training process per visible GPU; one on a CPU-only machine."""
    import torch

    return max(1, torch.cuda.device_count())


def _train(cfg, run_dir: Path, resume: bool, progress: bool, log) -> None:
    """Train (or resume) one run and add its wall time to the run's ablate.json."""
    bookkeeping = _read_json(run_dir / "ablate.json")
    start = time.time()
    Trainer(cfg, run_dir, resume=resume, progress=progress, log=log).run()
    bookkeeping["train_seconds"] = bookkeeping.get("train_seconds", 0.0) + time.time() - start
    (run_dir / "ablate.json").write_text(json.dumps(bookkeeping))


def _pin_worker(slots, workers: int) -> None:
    """Runs first in each worker process, before anything touches CUDA."""
    import torch

    os.environ["CUDA_VISIBLE_DEVICES"] = str(slots.get())
    if not torch.cuda.is_available():  # CPU workers share the cores instead of fighting over them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _train_in_worker(cfg, run_dir: Path, resume: bool, label: str) -> None:
    _train(cfg, run_dir, resume, progress=False,
           log=lambda message: print(f"[{label} on device {os.environ['CUDA_VISIBLE_DEVICES']}] {message}",
                                     file=sys.stderr, flush=True))  # stdout is for results (--json)


def _train_all(jobs: list, workers: int, progress: bool, log) -> None:
    """jobs: (label, cfg, run_dir, resume). Sequential with one worker, else a process pool."""
    if workers <= 1 or len(jobs) <= 1:
        for label, cfg, run_dir, resume in jobs:
            log(label)
            _train(cfg, run_dir, resume, progress, log)
        return
    context = multiprocessing.get_context("spawn")  # a forked CUDA context would be unusable
    slots = context.Queue()
    for device in range(workers):
        slots.put(device)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_pin_worker, initargs=(slots, workers)) as pool:
        futures = []
        for label, cfg, run_dir, resume in jobs:
            log(f"{label} (queued on {workers} workers)")
            futures.append(pool.submit(_train_in_worker, cfg, run_dir, resume, label.split(":")[0]))
        try:
            for future in futures:
                future.result()  # re-raises a worker's failure here
        except BaseException:
            pool.shutdown(cancel_futures=True)  # runs in progress finish and keep their checkpoints
            raise


def variant_tokens(variant, cfg, tokens: int) -> int:
    """A variant's training budget: --tokens, or its epochs over the run's unique tokens (whole blocks)."""
    if variant.epochs is None:
        return tokens
    unique = cfg.data.unique_tokens // cfg.model.seq_len * cfg.model.seq_len
    if unique == 0:
        raise AtatError(f"variant '{variant.name}' trains for {variant.epochs} epochs, but over how many tokens: "
                        "data.unique_tokens is not set", "set it in the grid or pass --set data.unique_tokens=N")
    return variant.epochs * unique


def run_grid(grid: Grid, *, size: str, data: str, tokens: int, seeds: int, out: Path, mc: int = 4,
             split: str = "valid", overrides: list[str] = (), log=print, progress: bool = True,
             workers: int | None = None) -> list[RunRecord]:
    out = Path(out)
    overrides = [*grid.overrides, *overrides]
    plans = []
    for variant in grid.variants:  # resolve every config before anything trains
        probe = variant.resolve(size, [f"data.name={data}", *overrides])
        tokens_per_step = probe.train.batch_size * probe.train.grad_accum * probe.model.seq_len
        steps = max(1, variant_tokens(variant, probe, tokens) // tokens_per_step)
        for seed in range(seeds):
            common = [f"data.name={data}", f"train.max_steps={steps}", f"train.seed={seed}",
                      f"train.eval_every={max(1, steps // 8)}", f"train.save_every={max(1, steps // 4)}", *overrides]
            plans.append((variant, seed, steps, tokens_per_step, variant.resolve(size, common)))

    jobs = []
    for i, (variant, seed, steps, tokens_per_step, cfg) in enumerate(plans, 1):
        run_dir = out / variant.name / f"seed{seed}"
        done = _checkpoint_step(run_dir)
        label = f"[{i}/{len(plans)}] {variant.name} seed {seed}"
        if done >= steps:
            log(f"{label}: finished earlier, skipped")
        else:
            jobs.append((f"{label}: {'resuming at step ' + str(done) if done else 'training'} to {steps} steps "
                         f"({steps * tokens_per_step:,} tokens)", cfg, run_dir, done > 0))
    _train_all(jobs, default_workers() if workers is None else workers, progress, log)

    records = []
    for variant, seed, steps, tokens_per_step, cfg in plans:
        run_dir = out / variant.name / f"seed{seed}"
        bookkeeping = _read_json(run_dir / "ablate.json")
        # The checkpoint at the budget, not best.pt: choosing the best validation step and then
        # reporting on the same split would flatter variants whose loss rises late.
        key = {"step": steps, "checkpoint": "final", "mc": mc, "split": split, "seed": 0}
        cached = _read_json(run_dir / "eval.json")
        if cached.get("key") == key:
            evaluation = cached["result"]
        else:
            evaluation = evaluate_run(latest_checkpoint(run_dir), split=split, mc=mc, seed=0, progress=progress)
            (run_dir / "eval.json").write_text(json.dumps({"key": key, "result": evaluation}))
        metrics = _metrics(run_dir)
        speeds = [r["tokens_per_s"] for r in metrics if "tokens_per_s" in r]
        # a design with its own forward process is followed on its own bound, the one it trains
        key = "val_own_nelbo" if any("val_own_nelbo" in r for r in metrics) else "val_nelbo"
        curve = [(r["step"] * tokens_per_step, r[key]) for r in metrics if key in r]
        records.append(RunRecord(variant.name, cfg.method, seed, run_dir, steps, steps * tokens_per_step,
                                 bookkeeping.get("train_seconds", 0.0), sum(speeds) / len(speeds) if speeds else None,
                                 evaluation, curve, variant.epochs))
    return records
