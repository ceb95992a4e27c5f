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
from pathlib import Path

import yaml

from atat_cli.config import CONFIG_DIR
from atat_cli.errors import AtatError

SETTING_FIELDS = {"sampler", "steps", "adaptive", "threshold", "gamma", "metric", "grid", "temperature", "top_p"}


def load_sampling_grid(name_or_path: str, has_importance: bool) -> dict:
    """name -> SamplerSettings (validated); importance variants dropped when the run has no estimator."""
    from atat_cli.sampling import SamplerSettings

    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / "grids" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise AtatError(f"unknown sampling grid '{name_or_path}'", "built-in: sampling; or pass a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("variants"), dict):
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
        if settings.sampler == "importance" and not has_importance:
            continue
        grid[str(name)] = settings
    return grid


def run_sampling_grid(trained, grid: dict, *, judge=None, num_samples: int = 8, length: int | None = None,
                      prompt: str = "", seed: int = 0, log=print) -> list[dict]:
    from atat_cli.sampling import generate, score_generation

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
