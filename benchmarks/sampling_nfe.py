"""Fewer steps at equal quality? Sample quality against NFE for every sampler, over seeds.

    python benchmarks/sampling_nfe.py --model RUN [--judge AR_RUN] [--samples 64] [--seeds 0,1,2]
                                      [--only RULES] [--cache-block 32] [--json out.json]

For a trained diffusion run, each rule is swept over its budget knob, and every configuration
draws `--samples` unconditional samples of one context with each seed:
  ancestral, remdm-cap(0.02), confidence (entropy order), margin (confidence order by top-1 minus
  top-2 probability) at steps {16, 32, 64, 128, 256}; threshold (Fast-dLLM, confidence order) at
  {0.5, 0.7, 0.9, 0.95, 0.99}; entropy-bound (EB-sampler) at gamma {4, 1, 0.5, 0.1, 0.01}.

Quality is exact on the synthetic Markov corpus (`--data synthetic` runs): the source's own
NLL per word of the samples' consecutive valid word pairs, the share of valid words, and the
word entropy (low diversity shows there), from `MarkovSource.score_texts`. On any other corpus
an AR judge of the same data (`--judge`) gives the generative perplexity, with the samples'
unigram entropy.

The reference is ancestral/256. A configuration matches it when, averaged over seeds, it is no
worse by more than the spread over seeds (the larger standard deviation of the two) on: the
bigram KL to the source and the valid share (synthetic: the distance to the truth, which
penalises both errors and low diversity), or gen. PPL and unigram entropy (judged corpora). For each rule the
table gives the cheapest matching configuration and its NFE per sample as a ratio to the
reference's own NFE per sample (ancestral caching makes that less than 256 when there are
fewer tokens than steps), with the ratio's spread over seeds: below 1 means steps saved.

`--cache-block B` adds the cached block decoding comparison: confidence and ancestral decoding
in blocks of B positions, B/4 steps per block, without a cache and with the dual cache, timed
one after the other (wall seconds; the quality columns as above). For a block-causal run
(model.block_size, BD3-LM) B is its block size and the cache is the exact prefix cache;
`--cache-only` skips the sweep (its steps are per block, which a block-causal run multiplies by
its number of blocks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from atat_cli.device import default_device
from atat_cli.runs import load_run
from atat_cli.sampling import SamplerSettings, generate, score_generation
from atat_cli.sampling.quality import ARRunJudge

sys.path.insert(0, str(Path(__file__).parent))
from sampling import uptime  # noqa: E402  (benchmarks/sampling.py)

STEPS = (16, 32, 64, 128, 256)
THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.99)
GAMMAS = (4.0, 1.0, 0.5, 0.1, 0.01)


def rules(steps=STEPS, thresholds=THRESHOLDS, gammas=GAMMAS) -> dict[str, list[SamplerSettings]]:
    """Each rule's configurations, cheapest first."""
    return {
        "ancestral": [SamplerSettings(sampler="ancestral", steps=n) for n in steps],
        "remdm-cap(0.02)": [SamplerSettings(sampler="remdm", remask="cap", eta=0.02, steps=n) for n in steps],
        "confidence": [SamplerSettings(sampler="confidence", steps=n) for n in steps],
        "margin": [SamplerSettings(sampler="confidence", metric="margin", steps=n) for n in steps],
        "threshold": [SamplerSettings(sampler="confidence", adaptive="threshold", threshold=x) for x in thresholds],
        "entropy-bound": [SamplerSettings(sampler="confidence", adaptive="entropy-bound", gamma=g) for g in gammas],
    }


def quality_of(gen, source, judge) -> dict:
    """The quality columns of one generation (one seed), higher-is-worse ones marked in WORSE."""
    if source is not None:
        q = source.score_texts([s.continuation for s in gen.samples])
        return {"nll_per_word": q["nll_per_word"], "valid": q["valid"], "word_entropy": q["word_entropy"],
                "bigram_kl": q["bigram_kl"]}
    q = score_generation(gen, judge)
    return {"gen_ppl": q["gen_ppl"], "entropy": q["entropy"]}


# On the synthetic corpus the truth is known, so a sample is judged by its distance to the source
# (bigram KL, valid share), not to ancestral/256: that reference's own samples are too diverse
# (word entropy above the source's) and too unlikely (NLL/word above the entropy rate), and
# matching them column by column would penalise samplers that are closer to the source.
WORSE_IF_HIGHER = ("bigram_kl", "gen_ppl")
WORSE_IF_LOWER = ("valid", "entropy")


def run_config(trained, settings, samples, seeds, source, judge, **blocks) -> dict:
    per_seed = []
    for seed in seeds:
        gen = generate(trained, "", settings, num_samples=samples, batch_size=samples, seed=seed, **blocks)
        per_seed.append({"nfe_per_sample": statistics.mean(s.nfe for s in gen.samples), "batch_nfe": gen.nfe,
                         "seconds": gen.seconds, **quality_of(gen, source, judge)})
    summary = {}
    for key in per_seed[0]:
        values = [r[key] for r in per_seed]
        if any(v is None for v in values):  # e.g. no valid word pair to score: the column has no value
            summary[key] = summary[key + "_sd"] = None
            continue
        summary[key] = statistics.mean(values)
        summary[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"config": settings.describe(), "per_seed": per_seed, **summary}


def matches(row: dict, ref: dict) -> bool:
    """No worse than the reference on any quality column by more than the spread over seeds."""
    for key in WORSE_IF_HIGHER + WORSE_IF_LOWER:
        if ref.get(key) is None:
            continue
        if row[key] is None:
            return False
        tol = max(row[key + "_sd"], ref[key + "_sd"])
        if key in WORSE_IF_HIGHER and row[key] > ref[key] + tol:
            return False
        if key in WORSE_IF_LOWER and row[key] < ref[key] - tol:
            return False
    return True


def print_verdicts(results: dict, reference: dict) -> dict:
    print("\nNFE each rule needs to match ancestral/256 (the cheapest configuration within the seed spread on "
          f"{', '.join(k for k in WORSE_IF_HIGHER + WORSE_IF_LOWER if reference.get(k) is not None)}):\n")
    print("| rule | cheapest match | NFE/sample | ratio to ancestral/256 (± over seeds) |")
    print("| --- | --- | ---: | ---: |")
    verdicts = {}
    ref_nfe = [r["nfe_per_sample"] for r in reference["per_seed"]]
    for rule, rows in results.items():
        match = next((r for r in rows if matches(r, reference)), None)
        if match is None:
            verdicts[rule] = None
            print(f"| {rule} | none in its grid | – | – |")
            continue
        ratios = [m["nfe_per_sample"] / n for m, n in zip(match["per_seed"], ref_nfe)]
        sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        verdicts[rule] = {"config": match["config"], "ratio": statistics.mean(ratios), "ratio_sd": sd}
        print(f"| {rule} | {match['config']} | {match['nfe_per_sample']:.1f} | {statistics.mean(ratios):.2f} ± {sd:.2f} |")
    return verdicts


def quality_cells(row: dict, columns: list[str]) -> str:
    return " | ".join(fmt(row[c], ".4f" if c != "gen_ppl" else ".1f", row[c + "_sd"]) for c in columns)


def fmt(value, spec=".3f", sd=None):
    if value is None:
        return "–"
    return f"{value:{spec}}" + ("" if sd is None else f" ± {sd:{spec}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="A trained MDLM or ATAT run.")
    parser.add_argument("--judge", default=None, help="An AR run of the same data (needed unless the data is synthetic).")
    parser.add_argument("--samples", type=int, default=64, help="Samples per configuration and seed.")
    parser.add_argument("--seeds", default="0,1,2", help="Sampling seeds, comma-separated (at least 2 for a spread).")
    parser.add_argument("--only", default=None, help="Comma-separated rule names to sweep (default: all).")
    parser.add_argument("--steps", default=None, help="Comma-separated step counts (default 16,32,64,128,256).")
    parser.add_argument("--thresholds", default=None, help="Comma-separated thresholds (default 0.5,...,0.99).")
    parser.add_argument("--gammas", default=None, help="Comma-separated entropy bounds (default 4,1,0.5,0.1,0.01).")
    parser.add_argument("--cache-block", type=int, default=None,
                        help="Also compare the dual cache (a block-causal run: the prefix cache) at this block size.")
    parser.add_argument("--cache-only", action="store_true", help="Only the --cache-block comparison, no sweep.")
    parser.add_argument("--json", type=Path, default=None, help="Also write every row (and its seeds) to this file.")
    parser.add_argument("--verdicts", type=Path, default=None,
                        help="Only recompute the cheapest matches from a --json file of an earlier run.")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.verdicts is not None:
        saved = json.loads(args.verdicts.read_text())
        print_verdicts(saved["rules"], next(r for r in saved["rules"]["ancestral"] if r["config"] == "ancestral/256"))
        return

    def floats(text, default):
        return default if text is None else tuple(float(v) for v in text.split(","))

    steps = tuple(int(v) for v in floats(args.steps, STEPS))
    if 256 not in steps:
        sys.exit("error: --steps must include 256, the reference ancestral/256")
    device = default_device()
    trained = load_run(args.model, device)
    if trained.cfg.method == "ar":
        sys.exit("error: --model must be a diffusion run (mdlm or atat)")
    source = judge = None
    if trained.cfg.data.name == "synthetic":
        from atat_cli.data.synthetic import default_source

        source = default_source()
    else:
        if args.judge is None:
            sys.exit("error: a run not on the synthetic corpus needs --judge (an AR run of the same data)")
        judge = ARRunJudge(load_run(args.judge, device))
    all_rules = rules(steps, floats(args.thresholds, THRESHOLDS), floats(args.gammas, GAMMAS))
    chosen = list(all_rules) if args.only is None else args.only.split(",")
    unknown = [r for r in chosen if r not in all_rules]
    if unknown:
        sys.exit(f"error: unknown rule(s) {', '.join(unknown)}; choose from {', '.join(all_rules)}")

    seq_len = trained.cfg.model.seq_len
    causal_block = trained.cfg.model.block_size
    if causal_block and args.cache_block not in (None, causal_block):
        sys.exit(f"error: the run is block-causal with blocks of {causal_block}: --cache-block must be {causal_block}")
    if args.cache_only and not args.cache_block:
        sys.exit("error: --cache-only needs --cache-block")
    load_before = uptime()
    print(f"{trained.cfg.method.upper()} {trained.checkpoint} (step {trained.step}), data {trained.cfg.data.name}; "
          f"{args.samples} unconditional samples x {seq_len} tokens per configuration and seed, seeds {seeds}; "
          f"device {device}, {torch.get_num_threads()} threads\nload before: {load_before}\n", flush=True)
    columns = (["nll_per_word", "valid", "word_entropy", "bigram_kl"] if source is not None else ["gen_ppl", "entropy"])
    if not args.cache_only:
        print("| rule | configuration | NFE/sample | " + " | ".join(columns) + " | wall s/seed |")
        print("| --- | --- | ---: | " + " | ".join("---:" for _ in columns) + " | ---: |", flush=True)
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {}
    reference = None
    ordered = ["ancestral"] + [r for r in chosen if r != "ancestral"]  # the reference first
    for rule in [] if args.cache_only else ordered:
        configs = all_rules[rule] if rule in chosen else [all_rules["ancestral"][-1]]
        for settings in configs:
            row = run_config(trained, settings, args.samples, seeds, source, judge)
            results.setdefault(rule, []).append(row)
            if rule == "ancestral" and settings.steps == 256:
                reference = row
            print(f"| {rule} | {row['config']} | {fmt(row['nfe_per_sample'], '.1f', row['nfe_per_sample_sd'])} | "
                  + quality_cells(row, columns) + f" | {row['seconds']:.1f} |", flush=True)

    verdicts = print_verdicts(results, reference) if reference is not None else {}
    cache_rows = []
    if args.cache_block:
        block = args.cache_block
        per_block = max(1, block // 4)
        print(f"\nCached block decoding: blocks of {block} positions, {per_block} steps per block\n")
        print("| configuration | cache | NFE/sample | " + " | ".join(columns) + " | wall s/seed |")
        print("| --- | --- | ---: | " + " | ".join("---:" for _ in columns) + " | ---: |", flush=True)
        for settings in (SamplerSettings(sampler="confidence", steps=per_block),
                         SamplerSettings(sampler="ancestral", steps=per_block)):
            for cache in ("none", "prefix" if causal_block else "dual"):
                row = run_config(trained, settings, args.samples, seeds, source, judge, block_size=block, cache=cache)
                row["cache"] = cache
                cache_rows.append(row)
                print(f"| {row['config']} | {cache} | {fmt(row['nfe_per_sample'], '.1f')} | "
                      + quality_cells(row, columns) + f" | {row['seconds']:.2f} ± {row['seconds_sd']:.2f} |", flush=True)
        for a, b in zip(cache_rows[::2], cache_rows[1::2]):
            print(f"{a['config']}: {b['cache']} cache speed-up {a['seconds'] / b['seconds']:.2f}x (wall, mean over seeds)")

    print(f"\nload after: {uptime()}; {time.perf_counter() - t0:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"model": str(trained.checkpoint), "samples": args.samples, "seeds": seeds,
                                         "rules": results, "verdicts": verdicts, "cache": cache_rows,
                                         "load_before": load_before}, indent=2))


if __name__ == "__main__":
    main()
