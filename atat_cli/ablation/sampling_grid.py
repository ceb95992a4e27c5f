"""Sampling grids: samplers, orders and step counts compared on one trained run.

    variants:
      confidence_32: {sampler: confidence, steps: 32}
      confidence_threshold_0.9: {sampler: confidence, adaptive: threshold, threshold: 0.9}

Every variant generates the same number of samples of the same length from the same seed, and
is scored the same way: NFE, wall time, tokens/s, unigram entropy, and generative perplexity
under a judge when one is given (never perplexity without entropy: repetitive text scores well).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from atat_cli.ablation.grid import read_grid_file
from atat_cli.device import default_device
from atat_cli.errors import AtatError, require
from atat_cli.runs import load_run
from atat_cli.sampling import SamplerSettings, generate, load_judge, score_generation
from atat_cli.sampling.samplers import PARAMETERIZATION_SAMPLERS, SAMPLERS

SETTING_FIELDS = {"sampler", "steps", "adaptive", "threshold", "gamma", "metric", "grid", "temperature", "top_p", "remask", "eta"}


def ablate_sampling(run, grid: str, *, judge: str | None = None, num_samples: int = 8, length: int | None = None,
                    only: list[str] | None = None, out: Path | None = None, log=print) -> tuple[dict, list[Path]]:
    """Compare the variants of a sampling grid (all, or those in `only`) on the trained run RUN and
    write sampling.md and sampling.json into `out` (default: the run's folder/ablate-sampling).
    Returns the report and the files written."""
    require(length is None or length >= 0, f"--length must be at least 0 (got {length})")
    require(num_samples >= 1, f"--num-samples must be at least 1 (got {num_samples})")
    device = default_device()
    trained = load_run(run, device)
    if trained.cfg.method == "ar":
        raise AtatError("an AR run samples left to right with a KV cache: there are no samplers to compare",
                        "pass a diffusion run (trained with --method mdlm or atat)")
    settings = load_sampling_grid(grid, has_importance=trained.importance is not None, only=only,
                                  usable=PARAMETERIZATION_SAMPLERS[trained.cfg.diffusion.parameterization])
    judge_model = load_judge(judge, device) if judge else None
    rows = run_sampling_grid(trained, settings, judge=judge_model, num_samples=num_samples, length=length, log=log)
    report = {"run": str(trained.checkpoint), "judge": judge, "num_samples": num_samples, "rows": rows}
    return report, write_sampling_report(report, out or trained.checkpoint.parent / "ablate-sampling")


def load_sampling_grid(name_or_path: str, has_importance: bool, only: list[str] | None = None,
                       usable: tuple[str, ...] = SAMPLERS) -> dict:
    """name -> SamplerSettings (validated), restricted to `only` when given; importance variants
    are dropped when the run has no estimator, and variants of samplers outside `usable` (those
    the run's parameterisation can use), so naming one is an unknown variant."""
    path, data = read_grid_file(name_or_path, kind="sampling grid")
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
        raise AtatError(f"sampling grid {path} needs a 'variants' mapping")
    grid = {}
    for name, spec in data["variants"].items():
        spec = spec or {}
        unknown = sorted(set(spec) - SETTING_FIELDS)
        if unknown:
            raise AtatError(f"sampling variant '{name}' has unknown key '{unknown[0]}'",
                            f"keys: {', '.join(sorted(SETTING_FIELDS))}")
        try:
            settings = SamplerSettings(**spec).validate()
        except AtatError as e:
            raise AtatError(f"sampling variant '{name}': {e.message}", e.hint) from e
        if (settings.sampler == "importance" and not has_importance) or settings.sampler not in usable:
            continue
        grid[str(name)] = settings
    if only:
        missing = [v for v in only if v not in grid]
        if missing:
            raise AtatError(f"unknown sampling variant '{missing[0]}'", f"variants: {', '.join(grid)}")
        grid = {k: v for k, v in grid.items() if k in only}
    return grid


def run_sampling_grid(trained, grid: dict, *, judge=None, num_samples: int = 8, length: int | None = None,
                      prompt: str = "", seed: int = 0, log=print) -> list[dict]:
    rows = []
    for i, (name, settings) in enumerate(grid.items(), 1):
        log(f"[{i}/{len(grid)}] {name}")
        generation = generate(trained, prompt, settings, length=length, num_samples=num_samples, seed=seed)
        quality = score_generation(generation, judge)
        rows.append({
            "variant": name, **{k: v for k, v in dataclasses.asdict(settings).items() if k in SETTING_FIELDS},
            "samples": num_samples,
            "mean_steps": sum(s.steps for s in generation.samples) / num_samples,
            "nfe": generation.nfe,
            "seconds": generation.seconds,
            "tokens_per_s": generation.tokens_per_second,
            "entropy": quality["entropy"],
            "gen_ppl": quality.get("gen_ppl"),
        })
    return rows


def sampling_markdown(rows: list[dict]) -> str:
    lines = ["| variant | mean steps | NFE | seconds | tokens/s | gen. perplexity | unigram entropy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ppl = "n/a" if r["gen_ppl"] is None else f"{r['gen_ppl']:.2f}"
        lines.append(f"| {r['variant']} | {r['mean_steps']:.1f} | {r['nfe']} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} "
                     f"| {ppl} | {r['entropy']:.3f} |")
    return "\n".join(lines)


def write_sampling_report(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling.json").write_text(json.dumps(report, indent=2))
    (out / "sampling.md").write_text(sampling_markdown(report["rows"]) + "\n")
    return [out / "sampling.md", out / "sampling.json"]
