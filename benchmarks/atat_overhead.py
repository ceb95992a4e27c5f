"""Each ATAT design against MDLM: step-time overhead, and (optionally) validation bits per byte.

    python benchmarks/atat_overhead.py                          # the recorded run (docs/benchmarks.md)
    python benchmarks/atat_overhead.py --rounds 3 --variant time  # a quick look at one design

Part 1 times the trainer's own step (`Trainer.train_step()`: forward, backward, clipping, AdamW,
LR schedule, EMA) of `tiny` for MDLM and every ATAT design (configs/atat/<design>.yaml), and
BD3-LM's block-causal denoiser for reference (`model.block_size`, not ATAT), on the
default corpus, interleaved round by round so that machine noise hits all alike, and reports the
median step time of each and its ratio to MDLM (the target: at most 1.06 at `tiny`).

Part 2 (`--steps N`) trains each variant with the real trainer for the same number of steps (so
the same number of tokens) for each seed, evaluates every run with the uniform-masking NELBO on
the validation split (`atat eval`'s numbers) and reports bits per byte as mean and standard
deviation over seeds. The design comparison proper is `atat ablate` (docs/atat-designs.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from atat_cli.config import load_config
from atat_cli.device import resolve_precision
from atat_cli.models import count_parameters, importance_estimator_of
from atat_cli.runs import evaluate_run
from atat_cli.training import Trainer

# name: (method, preset, overrides); bd3lm_b* are BD3-LM's block-causal denoiser (not ATAT), for reference
VARIANTS = {"MDLM": ("mdlm", None, []), "time_grad": ("atat", "atat/time_grad", []),
            "time_grad_bound": ("atat", "atat/time_grad_bound", []), "time": ("atat", "atat/time", []),
            "time_bell": ("atat", "atat/time_bell", []), "tokens": ("atat", "atat/tokens", []),
            "frequency": ("atat", "atat/frequency", []), "learned": ("atat", "atat/learned", []),
            "position": ("atat", "atat/position", []),
            "seed": ("atat", "atat/seed", []),
            "bd3lm_b4": ("mdlm", None, ["model.block_size=4"]), "bd3lm_b16": ("mdlm", None, ["model.block_size=16"])}


def step_times(size: str, rounds: int, precision: str, data: str) -> dict:
    """Median `Trainer.train_step()` time of each variant (the trainer's own step: forward,
    backward, clipping, AdamW, LR schedule, EMA), interleaved round by round."""
    trainers = {}
    for name, (method, preset, extra) in VARIANTS.items():
        cfg = load_config(size, method, config_file=preset,
                          overrides=["train.max_steps=1000000", f"train.precision={precision}", f"data.name={data}", *extra])
        trainers[name] = Trainer(cfg, progress=False, log=lambda *a, **k: None)

    def one_step(trainer) -> float:
        start = time.perf_counter()
        trainer.train_step()
        return time.perf_counter() - start

    for trainer in trainers.values():  # warm-up
        one_step(trainer)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            times[name].append(one_step(trainer))
    median = {name: statistics.median(t) for name, t in times.items()}
    mdlm_cfg = trainers["MDLM"].cfg
    return {
        "precision": precision,
        "tokens_per_step": mdlm_cfg.train.batch_size * mdlm_cfg.model.seq_len,
        "data": data,
        "median_step_s": median,
        "ratio": {name: m / median["MDLM"] for name, m in median.items()},
        "estimator_params": {name: count_parameters(e) for name, t in trainers.items()
                             if (e := importance_estimator_of(t.model)) is not None},
        "denoiser_params": count_parameters(trainers["MDLM"].model),
    }


def compare(size: str, steps: int, seeds: list[int], mc: int, root: Path, data: str) -> list[dict]:
    rows = []
    for seed in seeds:
        for name, (method, preset, extra) in VARIANTS.items():
            cfg = load_config(size, method, config_file=preset,
                              overrides=[f"train.max_steps={steps}", f"train.seed={seed}", "train.eval_every=0",
                                         f"train.save_every={steps}", f"data.name={data}", *extra])
            run_dir = root / f"{name}-seed{seed}"
            start = time.time()
            Trainer(cfg, run_dir, progress=False, log=lambda *a, **k: None).run()
            seconds = time.time() - start
            result = evaluate_run(run_dir, split="valid", mc=mc)
            rows.append({"variant": name, "seed": seed, "steps": steps,
                         "tokens": steps * cfg.train.batch_size * cfg.model.seq_len,
                         "bits_per_byte": result["bits_per_byte"], "nelbo": result["nelbo"],
                         "importance_spearman": result.get("importance_spearman"), "train_seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    out = {}
    for name in VARIANTS:
        bpb = [r["bits_per_byte"] for r in rows if r["variant"] == name]
        out[name] = {"mean": statistics.mean(bpb), "std": statistics.stdev(bpb) if len(bpb) > 1 else float("nan"),
                     "n": len(bpb)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--data", default="pydocs")
    parser.add_argument("--variant", action="append", choices=[v for v in VARIANTS if v != "MDLM"],
                        help="designs to time beside MDLM (repeatable; default: all)")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per variant (part 1)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per run (part 2; 0 = skip it)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mc", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write all results to this file")
    args = parser.parse_args()
    for name in set(VARIANTS) - {"MDLM", *(args.variant or VARIANTS)}:
        del VARIANTS[name]

    precision = resolve_precision("auto", torch.device("cpu"))
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f}; torch {torch.__version__}, {torch.get_num_threads()} threads, {precision}")
    timing = step_times(args.size, args.rounds, precision, args.data)
    print(json.dumps(timing), flush=True)
    rows, summary = [], {}
    if args.steps:
        with tempfile.TemporaryDirectory() as tmp:
            rows = compare(args.size, args.steps, list(range(args.seeds)), args.mc, Path(tmp), args.data)
        summary = summarize(rows)

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    t = timing["median_step_s"]
    print(f"\n### ATAT step-time overhead ({args.size}, {args.data}, {precision}, {timing['tokens_per_step']} "
          f"tokens/step, {model})\n")
    print("| variant | median step (s) | ratio to MDLM | estimator parameters |\n| --- | ---: | ---: | ---: |")
    for name in VARIANTS:
        params = timing["estimator_params"].get(name)
        print(f"| {name} | {t[name]:.3f} | {t[name] / t['MDLM']:.3f} | {'-' if params is None else f'{params:,}'} |")
    print(f"\nDenoiser: {timing['denoiser_params'] / 1e6:.2f}M parameters.")
    if not rows:
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        if args.json:
            args.json.write_text(json.dumps({"timing": timing}, indent=2))
        return
    print(f"\n### Validation bits per byte after {args.steps} steps ({rows[0]['tokens']:,} tokens), "
          f"{args.seeds} seeds, uniform-masking NELBO with --mc {args.mc}\n")
    print("| variant | bits/byte mean | std over seeds | per seed |\n| --- | ---: | ---: | --- |")
    for name, s in summary.items():
        per_seed = ", ".join(f"{r['bits_per_byte']:.4f}" for r in rows if r["variant"] == name)
        print(f"| {name} | {s['mean']:.4f} | {s['std']:.4f} | {per_seed} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"timing": timing, "rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
