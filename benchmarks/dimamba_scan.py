"""DiMamba's PyTorch scan, eager against compiled (`model.compile_scan`), side by side.

    python benchmarks/dimamba_scan.py                 # tiny, the trainer's step, 4 rounds
    python benchmarks/dimamba_scan.py --rounds 2 --size screen

Times the trainer's own step (`Trainer.train_step()`: forward, backward, clipping, AdamW, EMA) of
a DiMamba MDLM with the chunk step of its scan eager and compiled, one step of each per round,
after untimed warm-up steps (the compile happens there; its time is reported apart), and prints
the median step times and their ratio. The mamba-ssm CUDA kernel, when installed and on a GPU,
replaces the PyTorch scan and is not what this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from train_throughput import machine_info  # benchmarks/ is on sys.path when run as a script

from atat_cli.config import load_config
from atat_cli.device import resolve_precision
from atat_cli.training import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--data", default="pydocs")
    parser.add_argument("--rounds", type=int, default=4, help="timed steps per setting, interleaved")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per setting first")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    trainers, warmup_s = {}, {}
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = load_config(args.size, "mdlm", overrides=[f"data.name={args.data}", "model.backbone=dimamba",
                                                        f"model.compile_scan={str(compiled).lower()}"])
        trainers[name] = Trainer(cfg, progress=False, log=lambda *a, **k: None)
        start = time.perf_counter()
        for _ in range(args.warmup):
            trainers[name].train_step()
        warmup_s[name] = time.perf_counter() - start
    times = {name: [] for name in trainers}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step()
            times[name].append(time.perf_counter() - start)
    cfg = trainers["eager"].cfg
    tokens = cfg.train.batch_size * cfg.model.seq_len
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {**machine_info(), "precision": resolve_precision(cfg.train.precision, torch.device("cpu")), "size": args.size,
              "tokens_per_step": tokens, "warmup_s": warmup_s, "step_s": times, "median_step_s": median,
              "speedup": median["eager"] / median["compiled"], "load_before": load_before,
              "load_after": os.getloadavg()}
    print(f"{result.get('cpu', 'unknown CPU')}, torch {result['torch']}, {result['threads']} threads, {result['precision']}, "
          f"DiMamba {args.size}, {tokens} tokens/step; load average {load_before} -> {result['load_after']}")
    print("| scan | median step s (n) | tokens/s | warm-up s (incl. compile) |\n|---|---:|---:|---:|")
    for name in trainers:
        print(f"| {name} | {median[name]:.3f} ({len(times[name])}) | {tokens / median[name]:,.0f} | {warmup_s[name]:.1f} |")
    print(f"compiled / eager speed-up: {result['speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
