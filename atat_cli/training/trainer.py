"""The training loop: one objective, AdamW + warm-up/cosine, clipping, EMA, autocast, accumulation,
periodic validation, atomic checkpoints that resume exactly, Ctrl-C that saves and exits.

Shaped for torchrun: rank 0 alone logs and writes; every rank reads its own shard of the data;
all state lives on the Trainer (no module globals).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from atat_cli.config import OBJECTIVE_KINDS, config_from_dict
from atat_cli.data import BatchLoader, PreparedData, ensure_prepared
from atat_cli.device import autocast, resolve_precision
from atat_cli.errors import AtatError
from atat_cli.evaluation import evaluate_likelihood, summarize
from atat_cli.models import ATATModel, build_model, count_parameters
from atat_cli.objectives import build_objective, loss_name
from atat_cli.progress import ProgressBar
from atat_cli.training.checkpoint import (
    TEMP_PATTERN,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temp_files,
    save_atomic,
    save_step_checkpoint,
)
from atat_cli.training.distributed import DistEnv
from atat_cli.training.ema import EMA
from atat_cli.training.lock import RunLock
from atat_cli.training.sinks import MetricSinks


def lr_factor(step: int, optim_cfg, max_steps: int) -> float:
    """Linear warm-up to 1, then constant or cosine decay to min_lr_ratio at max_steps."""
    if step < optim_cfg.warmup_steps:
        return (step + 1) / optim_cfg.warmup_steps
    if optim_cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - optim_cfg.warmup_steps) / max(1, max_steps - optim_cfg.warmup_steps))
    return optim_cfg.min_lr_ratio + (1 - optim_cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def prepare_data(cfg, progress: bool = True) -> PreparedData:
    return ensure_prepared(cfg.data.name, tokenizer=cfg.data.tokenizer or None,
                           vocab_size=cfg.data.vocab_size or None, progress=progress)


@dataclass
class TrainResult:
    step: int
    interrupted: bool
    last_checkpoint: Path | None
    best_val: float | None
    seconds: float


def unique_blocks(blocks, unique_tokens: int, corpus: str):
    """The first unique_tokens // seq_len training blocks (whole blocks only)."""
    n, seq_len = unique_tokens // blocks.shape[1], blocks.shape[1]
    if n > len(blocks):
        raise AtatError(f"data.unique_tokens={unique_tokens:,} is more than the {len(blocks) * seq_len:,} tokens "
                        f"of {corpus}'s training split in blocks of {seq_len}", "use a smaller value, or 0 for all of it")
    return blocks[:n]


def clip_groups(model) -> list[list[torch.nn.Parameter]]:
    """The parameter groups clipped one by one, the denoiser's first: ATAT's estimator and
    per-token schedule are clipped on their own, so their gradients never shrink the denoiser's
    step and an ATAT run's denoiser trains as MDLM's would for the same losses."""
    if not isinstance(model, ATATModel):
        return [list(model.parameters())]
    groups = [list(part.parameters()) for part in (model.denoiser, model.estimator, model.token_schedule)
              if part is not None]
    return [group for group in groups if group]


class Trainer:
    """Built ready to step: device, data, model, EMA, optimiser, LR scheduler, objective, noise
    generator and loader all exist once the constructor returns, so `train_step()` and
    `validate()` work on a fresh trainer (benchmarks time `train_step()` itself). `run()` takes
    the run folder's lock, resumes if asked, and loops with logging, validation and checkpoints."""

    def __init__(self, cfg, run_dir: Path | None = None, *, resume: bool = False, progress: bool = True,
                 dist: DistEnv | None = None, log=print):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None  # only run() writes there
        self.resume = resume
        self.show_progress = progress
        self.dist = dist = dist or DistEnv.from_env()
        self.log = log if dist.is_main else (lambda *a, **k: None)
        self.interrupted = False

        dist.init()
        self.device = dist.device()
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if not dist.is_main:  # rank 0 prepares the corpus; the others wait, then reuse it
            dist.barrier()
        self.data = prepare_data(cfg, progress=self.show_progress and dist.is_main)
        if dist.is_main:
            dist.barrier()
        seq_len = cfg.model.seq_len
        self.train_blocks = self.data.blocks("train", seq_len)
        if cfg.data.unique_tokens:  # a data-constrained run: its first blocks, epoch after epoch
            self.train_blocks = unique_blocks(self.train_blocks, cfg.data.unique_tokens, self.data.name)
        self.valid_blocks = self.data.blocks("valid", seq_len)
        if len(self.valid_blocks) == 0:
            raise AtatError(f"the validation split of '{self.data.name}' has fewer than {seq_len} tokens",
                            "use more data or a smaller model.seq_len")

        torch.manual_seed(cfg.train.seed)
        counts = None
        if cfg.method == "atat" and cfg.atat.schedule.kind == "frequency":  # a fresh run's exponents
            seen = self.train_blocks.reshape(-1) if cfg.data.unique_tokens else self.data.tokens("train")
            counts = np.bincount(seen, minlength=self.data.vocab_size)
        self.model = build_model(cfg, self.data.vocab_size, token_counts=counts).to(self.device)
        self.ema = EMA(self.model, cfg.optim.ema) if cfg.optim.ema > 0 else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                           weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.optim, cfg.train.max_steps))
        self.objective = build_objective(cfg, self.data.vocab_size, self.data.eos_id)
        # Diffusion noise (times, masks) has its own generator so it can be saved and resumed.
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.train.seed + 1 + dist.rank)
        self.loader = BatchLoader(self.train_blocks, cfg.train.batch_size, seed=cfg.train.seed,
                                  rank=dist.rank, world_size=dist.world_size)
        self.step = 0
        self.best_val = None
        self.forward_model = dist.wrap(self.model)
        self.eager_model = self.forward_model
        if cfg.train.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.compile_unproven = cfg.train.compile  # until a compiled step has run

    def _state(self, full: bool = True) -> dict:
        """Everything needed to resume exactly; full=False keeps only what eval and sampling need."""
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "best_val": self.best_val,
            "data": {"name": self.data.name, "path": str(self.data.path), "vocab_size": self.data.vocab_size,
                     "eos_id": self.data.eos_id, "hash": self.data.meta.get("content_hash"),
                     "tokenizer_fingerprint": self.data.tokenizer_fingerprint},
        }
        if not full:
            return state
        return state | {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loader": self.loader.state_dict(),
            "objective": self.objective.state_dict(),
            "rng": self._rng_state(),
        }

    def _rng_state(self) -> dict:
        """Every random stream a step draws from: diffusion noise, torch's CPU and CUDA generators."""
        return {"noise": self.noise.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def _set_rng_state(self, rng: dict) -> None:
        self.noise.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        saved_model = state["config"]["model"]
        if saved_model != self.cfg.to_dict()["model"] or state["config"]["method"] != self.cfg.method:
            raise AtatError(f"cannot resume from {path}: its model or method differs from the requested config",
                            "resume with the same --size/--method/--config, or pass a new --out")
        self.model.load_state_dict(state["model"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"])
        self.objective.load_state_dict(state["objective"])
        self._set_rng_state(state["rng"])
        self.step = state["step"]
        self.best_val = state["best_val"]

    # --- the loop -----------------------------------------------------------------------------

    def train_step(self) -> dict:
        """One optimiser step over grad_accum micro-batches; the metrics of each micro-batch, as tensors.

        torch.compile compiles during the first step; if that fails (no C++ compiler, an op its
        backend cannot handle), the step is redone eagerly from the same batch and noise and
        training goes on without compile, saying so."""
        if not self.compile_unproven:
            return self._train_step()
        before = (self.loader.state_dict(), self._rng_state())
        try:
            metrics = self._train_step()
        except AtatError:
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back rather than stop
            self.loader.load_state_dict(before[0])
            self._set_rng_state(before[1])
            self.forward_model = self.eager_model
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.log(f"[yellow]torch.compile failed ({type(e).__name__}: {reason[:200]}); training without it[/]")
            metrics = self._train_step()
        self.compile_unproven = False
        return metrics

    def _train_step(self) -> dict:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        collected: dict[str, list] = {}
        self.objective.begin_step(self.step, cfg.train.max_steps)
        # diagnostics (per-band metrics) only on the steps whose metrics are written
        logged = (self.step + 1) % cfg.train.log_every == 0 or self.step + 1 == cfg.train.max_steps
        for micro in range(cfg.train.grad_accum):
            x0 = self.loader.next_batch().to(self.device, non_blocking=True)
            last = micro == cfg.train.grad_accum - 1
            sync = self.forward_model.no_sync() if (self.dist.enabled and not last) else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.precision):
                    loss, metrics = self.objective.loss(self.forward_model, x0, self.noise, diagnostics=logged)
                (loss / cfg.train.grad_accum).backward()
            for k, v in metrics.items():
                collected.setdefault(k, []).append(v)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        norms = [torch.nn.utils.clip_grad_norm_(group, clip) for group in clip_groups(self.model)]
        grad_norm = norms[0]  # the denoiser's
        if not all(torch.isfinite(n) for n in norms):
            raise AtatError(f"non-finite gradient norm at step {self.step + 1}",
                            "lower optim.lr or use --set train.precision=fp32; the last checkpoint is intact")
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.ema:
            self.ema.update(self.model, self.step)
        collected["grad_norm"] = [grad_norm]
        return collected  # per-micro-batch values; turned into numbers only on logging steps

    def validate(self) -> dict:
        """Uniform-masking validation NELBO (AR: NLL) with EMA weights on a fixed subset, and a
        per-token schedule's own NELBO beside it."""
        cfg = self.cfg
        n = min(len(self.valid_blocks), cfg.train.eval_batches * cfg.train.batch_size)
        with (self.ema.applied(self.model) if self.ema else contextlib.nullcontext()):
            raw = evaluate_likelihood(
                self.model, self.valid_blocks[:n], method=cfg.method, diffusion_cfg=cfg.diffusion,
                mask_id=self.data.vocab_size, bos_id=self.data.eos_id, mc=1, batch_size=cfg.train.batch_size,
                seed=1234, device=self.device, autocast=lambda: autocast(self.device, self.precision))
        summary = summarize(raw, self.data.bytes_per_token("valid"))
        val = {"val_nelbo": self.dist.mean(summary["nelbo"]), "val_bpb": self.dist.mean(summary["bits_per_byte"])}
        if "own_nelbo" in summary:  # a per-token schedule: its own bound too (best.pt follows the uniform one)
            val |= {"val_own_nelbo": self.dist.mean(summary["own_nelbo"]),
                    "val_own_bpb": self.dist.mean(summary["own_bits_per_byte"])}
        return val

    def _save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_step_checkpoint(self._state(), self.run_dir, self.step, self.cfg.train.keep_last)

    def _write(self, sinks: MetricSinks | None, record: dict) -> None:
        if sinks is not None:
            sinks.write(record)

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted:  # second Ctrl-C: stop now, the last checkpoint on disk is intact
            raise KeyboardInterrupt
        self.interrupted = True
        self.log("[yellow]Interrupted: saving a checkpoint after this step (Ctrl-C again to abort)[/]")

    def run(self) -> TrainResult:
        if self.run_dir is None:
            raise AtatError("Trainer.run() needs a run folder", "pass run_dir when building the Trainer")
        lock = RunLock(self.run_dir) if self.dist.is_main else None
        with lock or contextlib.nullcontext():
            try:
                return self._run()
            except BaseException:
                # A run that failed before its first checkpoint leaves no folder behind, but only a
                # folder this process made itself, while holding its lock: never another's.
                if lock is not None and lock.created_dir and latest_checkpoint(self.run_dir) is None:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise

    def _run(self) -> TrainResult:
        cfg = self.cfg
        if self.resume:
            path = latest_checkpoint(self.run_dir)
            if path is None:
                raise AtatError(f"nothing to resume: no checkpoint in {self.run_dir}",
                                "drop --resume to start a new run")
            self._restore(path)
            self.log(f"Resumed from {path.name} at step {self.step}")
        elif latest_checkpoint(self.run_dir) is not None:
            raise AtatError(f"{self.run_dir} already holds a training run",
                            "pass --resume to continue it, or --out NEW_DIR for a new run")
        elif self.dist.is_main and not _fresh_or_unsaved_run(self.run_dir):  # rank 0 alone makes the folder
            raise AtatError(f"{self.run_dir} is not empty and is not an atat run folder",
                            "pass --out with a new or empty folder; nothing in it was changed")
        if self.step >= cfg.train.max_steps:
            raise AtatError(f"the run is already at step {self.step} >= max_steps {cfg.train.max_steps}",
                            "pass a larger --max-steps to continue training")
        sinks = None
        if self.dist.is_main:
            for path in remove_stale_temp_files(self.run_dir):
                self.log(f"Removed {path.name}, left by an interrupted save")
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            sinks = MetricSinks(self.run_dir, cfg.train, cfg.to_dict(), start_step=self.step)
            self.log(f"Run folder: {self.run_dir}")
            backbone = "" if cfg.method == "ar" else f" ({cfg.model.backbone})"
            self.log(f"Model: {cfg.method}{backbone} {cfg.size}, {count_parameters(self.model) / 1e6:.2f}M parameters; "
                     f"data: {self.data.name} ({len(self.train_blocks)} train blocks of {cfg.model.seq_len}); "
                     f"device: {self.device}, precision: {self.precision}")
            if cfg.method == "atat":
                kind = cfg.atat.kind()
                self.log(f"Objective: {kind}: {OBJECTIVE_KINDS[kind]}")
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        start = time.time()
        try:
            last = self._loop(sinks)
        finally:
            signal.signal(signal.SIGINT, previous)
            if sinks is not None:
                sinks.close()
        return TrainResult(self.step, self.interrupted, last, self.best_val, time.time() - start)

    def _loop(self, sinks) -> Path | None:
        cfg = self.cfg
        tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.seq_len * self.dist.world_size
        bar = ProgressBar("train", cfg.train.max_steps, start=self.step, transient=False,
                          enabled=self.show_progress and self.dist.is_main, log=self.log)
        last_path = None
        # Throughput counts training steps only, not validation or checkpoint writes.
        window_seconds, window_steps = 0.0, 0
        with bar:
            while self.step < cfg.train.max_steps and not self.interrupted:
                step_start = time.perf_counter()
                metrics = self.train_step()
                window_seconds += time.perf_counter() - step_start
                window_steps += 1
                end = self.step == cfg.train.max_steps
                if self.step % cfg.train.log_every == 0 or end:
                    record = {"step": self.step, "tokens": self.step * tokens_per_step,
                              "lr": self.scheduler.get_last_lr()[0],
                              "tokens_per_s": window_steps * tokens_per_step / max(window_seconds, 1e-9)}
                    for k, values in metrics.items():
                        # averaged over micro-batches (skipping NaN: a band no micro-batch had); labels kept
                        value = values[-1] if isinstance(values[-1], str) else self.dist.mean(_nanmean(values))
                        record[k] = None if isinstance(value, float) and math.isnan(value) else value
                    record["loss"] = record.get("nelbo", record.get("nll"))
                    if not math.isfinite(record["loss"]):
                        raise AtatError(f"loss became {record['loss']} at step {self.step}",
                                        "lower optim.lr; the last checkpoint is intact")
                    self._write(sinks, record)
                    bar.update(self.step, f"loss {record['loss']:.3f} | {record['tokens_per_s']:,.0f} tok/s | "
                                          f"lr {record['lr']:.2e}")
                    window_seconds, window_steps = 0.0, 0
                if (cfg.train.eval_every and self.step % cfg.train.eval_every == 0) or end:
                    val = self.validate()
                    self.objective.observe_validation(val["val_nelbo"])
                    self._write(sinks, {"step": self.step, **val})
                    own = f"; own-process {val['val_own_nelbo']:.4f} nats/token" if "val_own_nelbo" in val else ""
                    bar.note(f"step {self.step}: val {loss_name(cfg.method)} {val['val_nelbo']:.4f} nats/token, "
                             f"{val['val_bpb']:.4f} bits/byte{own}")
                    if self.best_val is None or val["val_nelbo"] < self.best_val:
                        self.best_val = val["val_nelbo"]
                        if self.dist.is_main:
                            save_atomic(self._state(full=False), self.run_dir / "best.pt")
                if self.step % cfg.train.save_every == 0 or end or self.interrupted:
                    last_path = self._save() or last_path
        return last_path


def _fresh_or_unsaved_run(run_dir: Path) -> bool:
    """Whether a new training may start in this folder: it holds nothing but its lock and stale
    temporary files, or it is an atat run that stopped before its first checkpoint (its
    config.yaml reads as an atat config), which then starts over."""
    entries = [p for p in run_dir.iterdir() if p.name != ".lock" and not TEMP_PATTERN.match(p.name)]
    if not entries:
        return True
    try:
        config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    except (OSError, yaml.YAMLError, AtatError, TypeError, AttributeError):
        return False
    return True


def _nanmean(values: list[torch.Tensor]) -> float:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else float("nan")
