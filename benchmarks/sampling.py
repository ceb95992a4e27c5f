"""Samplers compared by quality per network evaluation, on a trained tiny MDLM of the default corpus.

    python benchmarks/sampling.py [--quick] [--samples K] [--json out.json] [--model RUN --judge RUN]

1. Trains, if absent, a tiny MDLM and a tiny AR judge on pydocs (runs/bench-sampling/{mdlm,ar};
   `--train-steps` steps at batch 8 each, same data, same tokenizer), or uses the runs given by
   `--model` (any MDLM or ATAT run; an ATAT run adds the importance rows) and `--judge` (an AR run
   of the same data).
2. Times one batched forward pass of the DiT (K sequences of one context), median of repeats, at
   the start and again right after each configuration (the cost drifts with a shared CPU's load).
3. For each sampler (ancestral, confidence, uncertainty; importance too when the run has an
   estimator; remdm-cap(0.02)) and step counts {16, 32, 64, 128}, plus adaptive thresholds and entropy bounds
   (confidence order), generates K unconditional samples of one context with seed 0 and reports:
   NFE (batched calls), wall time, tokens/s, generative perplexity under the AR judge (text
   before the first EOS only), mean unigram entropy of the samples (nats), and the overhead
   ratio wall / (NFE x one forward pass timed right after), ~1 when the sampler itself costs nothing
   (ancestral can go below 1: with caching a call may cover only the rows that changed), and the
   sampler's own share measured inside the same run, which a shared CPU's load does not skew:
   "wall / in-network", the wall time over the time spent inside the networks' forward calls
   (the DiT, and the importance estimator for the importance rows; forward hooks).
4. Reference rows: the AR judge sampling its own text (KV cache), and real validation text
   scored by the same judge (what "good" gen. perplexity and entropy look like here).

The machine's load (`uptime`) before and after is printed with the table: the CPU may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from atat_cli.device import autocast, default_device, resolve_precision
from atat_cli.runs import load_run
from atat_cli.sampling import SamplerSettings, generate, score_generation, unigram_entropy
from atat_cli.sampling.quality import ARRunJudge, generative_perplexity
from atat_cli.training.checkpoint import latest_checkpoint


def ensure_run(folder: Path, method: str, train_steps: int) -> Path:
    """Train a tiny run into `folder` unless it already holds a checkpoint."""
    if (folder / "best.pt").is_file() or latest_checkpoint(folder) is not None:
        return folder
    cmd = [sys.executable, "-m", "atat_cli.cli.app", "train", "--size", "tiny", "--method", method,
           "--max-steps", str(train_steps), "--out", str(folder), "--set", "train.batch_size=8",
           "--set", "train.eval_every=0", "--json"]
    print(f"training: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return folder


def forward_seconds(trained, batch: int, repeats: int = 7) -> float:
    """Median wall time of one batched DiT forward pass at one full context, as the sampler calls it."""
    device = next(trained.model.parameters()).device
    precision = resolve_precision(trained.cfg.train.precision, device)
    x = torch.full((batch, trained.cfg.model.seq_len), trained.data.vocab_size, device=device)
    level = torch.full((batch,), 0.5, device=device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            with autocast(device, precision):
                trained.model(x, level)
            if i >= 2:  # two warm-up calls
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: few steps, 2 samples, short training.")
    parser.add_argument("--samples", type=int, default=None, help="Samples per configuration (default 4, quick 2).")
    parser.add_argument("--train-steps", type=int, default=None, help="Training steps of each tiny run (default 80).")
    parser.add_argument("--runs", type=Path, default=None, help="Folder of the two runs (default runs/bench-sampling).")
    parser.add_argument("--model", default=None, help="Trained MDLM/ATAT run to sample from instead of training one.")
    parser.add_argument("--judge", default=None, help="Trained AR run of the same data that scores the samples.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows to this JSON file.")
    parser.add_argument("--steps", default=None, help="Comma-separated step counts (default 16,32,64,128).")
    parser.add_argument("--only", default=None,
                        help="Comma-separated substrings: run only the sampler rows whose name contains one "
                             "(e.g. 'entropy-bound,threshold'); the reference rows always run.")
    args = parser.parse_args()
    quick = args.quick
    samples = args.samples or (2 if quick else 4)
    train_steps = args.train_steps or (20 if quick else 80)
    root = args.runs or Path("runs/bench-sampling-quick" if quick else "runs/bench-sampling")
    step_counts = (16, 32) if quick else (16, 32, 64, 128)
    if args.steps:
        step_counts = tuple(int(n) for n in args.steps.split(","))
    thresholds = (0.7,) if quick else (0.5, 0.9)
    gammas = (1.0,) if quick else (0.5, 4.0)

    load_before = uptime()
    device = default_device()
    mdlm = load_run(args.model or ensure_run(root / "mdlm", "mdlm", train_steps), device)
    ar = load_run(args.judge or ensure_run(root / "ar", "ar", train_steps), device)
    if ar.cfg.method != "ar" or ar.data.vocab_size != mdlm.data.vocab_size:
        sys.exit(f"error: the judge must be an AR run with the model's tokenizer ({ar.checkpoint})")
    judge = ARRunJudge(ar)
    seq_len = mdlm.cfg.model.seq_len
    t_fwd = forward_seconds(mdlm, samples)
    print(f"one forward pass ({samples} x {seq_len} tokens): {t_fwd * 1000:.1f} ms; threads {torch.get_num_threads()}",
          file=sys.stderr)

    in_network = [0.0]  # seconds inside forward calls of the sampled run's networks
    for net in {mdlm.model, *([mdlm.importance] if isinstance(mdlm.importance, torch.nn.Module) else [])}:
        net.register_forward_pre_hook(lambda module, args: in_network.append(time.perf_counter()))
        net.register_forward_hook(lambda module, args, out: in_network.__setitem__(
            0, in_network[0] + time.perf_counter() - in_network.pop()))

    # Untimed warm-up: the ordered samplers compile their scoring once per process (seconds), a
    # one-time cost that is not the sampler's per-step overhead.
    generate(mdlm, "", SamplerSettings(sampler="confidence", steps=2), num_samples=samples, batch_size=samples, seed=0)

    configs = []
    samplers = ["ancestral", "confidence", "uncertainty"] + (["importance"] if mdlm.importance is not None else [])
    for name in samplers:
        configs += [SamplerSettings(sampler=name, steps=n) for n in step_counts]
    configs += [SamplerSettings(sampler="remdm", remask="cap", eta=0.02, steps=n) for n in step_counts]
    configs += [SamplerSettings(sampler="confidence", adaptive="threshold", threshold=x) for x in thresholds]
    configs += [SamplerSettings(sampler="confidence", adaptive="entropy-bound", gamma=g) for g in gammas]
    if args.only:
        configs = [c for c in configs if any(part in c.describe() for part in args.only.split(","))]

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    # Rows are printed as they finish, so a long run on a busy machine gives results early.
    print(f"{mdlm.cfg.method.upper()} {mdlm.checkpoint} (step {mdlm.step}); judge {ar.checkpoint} (step {ar.step}); "
          f"{samples} unconditional samples x {seq_len} tokens, seed 0, device {device}, "
          f"{torch.get_num_threads()} threads, one forward pass {t_fwd * 1000:.0f} ms")
    print(f"load before: {load_before}\n")
    print("| sampler | steps | NFE | wall s | tokens/s | gen. PPL | judged tokens | entropy (nats) | forward ms | overhead "
          "| wall / in-network |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    rows = []

    def add(row):
        rows.append(row)
        print(f"| {row['sampler']} | {fmt(row['steps'], '.1f')} | {fmt(row['nfe'], 'd')} | {fmt(row['seconds'], '.1f')} | "
              f"{fmt(row['tokens_per_s'], '.0f')} | {fmt(row['gen_ppl'], '.1f')} | {fmt(row['judge_tokens'], 'd')} | "
              f"{fmt(row['entropy'], '.2f')} | {fmt(row.get('forward_ms'), '.0f')} | {fmt(row['overhead'], '.2f')} | "
              f"{fmt(row.get('in_network'), '.3f')} |",
              flush=True)

    for settings in configs:
        in_network[0] = 0.0
        gen = generate(mdlm, "", settings, num_samples=samples, batch_size=samples, seed=0)
        network_seconds = in_network[0]
        # The forward pass is timed again right after each configuration: on a shared CPU its cost
        # drifts with the load, and the overhead ratio must compare like with like.
        t_now = forward_seconds(mdlm, samples, repeats=3)
        q = score_generation(gen, judge)
        add({"sampler": settings.describe(), "steps": statistics.mean(s.steps for s in gen.samples),
             "nfe": gen.nfe, "seconds": gen.seconds, "tokens_per_s": gen.tokens_per_second,
             "gen_ppl": q["gen_ppl"], "judge_tokens": q["judge_tokens"], "entropy": q["entropy"],
             "forward_ms": t_now * 1000, "overhead": gen.seconds / (gen.nfe * t_now),
             "in_network": gen.seconds / network_seconds})

    gen = generate(ar, "", SamplerSettings(), num_samples=samples, batch_size=samples, seed=0)
    q = score_generation(gen, judge)
    add({"sampler": "AR (KV cache, the judge itself)", "steps": statistics.mean(s.steps for s in gen.samples),
         "nfe": gen.nfe, "seconds": gen.seconds, "tokens_per_s": gen.tokens_per_second,
         "gen_ppl": q["gen_ppl"], "judge_tokens": q["judge_tokens"], "entropy": q["entropy"], "overhead": None})
    # Real text of the validation split, cut at its first EOS like the samples.
    tokenizer = mdlm.data.tokenizer()
    texts, entropies = [], []
    for block in mdlm.data.blocks("valid", seq_len)[:samples]:
        ids = [int(i) for i in block]
        ids = ids[: ids.index(mdlm.data.eos_id)] if mdlm.data.eos_id in ids else ids
        texts.append(tokenizer.decode(ids))
        entropies.append(unigram_entropy(ids))
    ref = generative_perplexity(judge, [""] * len(texts), texts)
    add({"sampler": "validation text (reference)", "steps": None, "nfe": None, "seconds": None,
         "tokens_per_s": None, "gen_ppl": ref["gen_ppl"], "judge_tokens": ref["judge_tokens"],
         "entropy": statistics.mean(entropies), "overhead": None})
    t_fwd_end = forward_seconds(mdlm, samples)
    print(f"\nload after: {uptime()}\none forward pass measured again at the end: {t_fwd_end * 1000:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "forward_seconds": [t_fwd, t_fwd_end], "samples": samples,
                                         "load_before": load_before, "pid": os.getpid()}, indent=2))


if __name__ == "__main__":
    main()
