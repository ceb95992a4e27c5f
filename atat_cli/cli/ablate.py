"""`atat ablate`: a grid of training variants at an equal token budget, summarised in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from atat_cli.cli.output import log, out, print_json


def ablate(
    grid: Annotated[str, typer.Option(help="Built-in grid (atat, temperature) or a YAML file of variants.")] = "atat",
    data: Annotated[str, typer.Option(help="Corpus every variant trains and is evaluated on.")] = "pydocs",
    size: Annotated[str, typer.Option(help="Model size preset for every variant.")] = "tiny",
    tokens: Annotated[int, typer.Option(help="Training tokens per run (the equal budget).")] = 300_000,
    seeds: Annotated[int, typer.Option(help="Seeds per variant.")] = 2,
    variants: Annotated[Optional[list[str]], typer.Option("--variant", help="Run only these variants (repeatable).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for runs and report (default runs/ablate-<grid>).")] = None,
    mc: Annotated[int, typer.Option(help="Time samples per block in the final evaluation.")] = 4,
    workers: Annotated[Optional[int], typer.Option(help="Runs trained at once, one per GPU (default: the number of visible GPUs, else 1).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key for every variant (repeatable).")] = None,
    sampling: Annotated[Optional[str], typer.Option(help="Compare samplers on this trained run instead of training (grid default: sampling).")] = None,
    judge: Annotated[Optional[str], typer.Option(help="With --sampling: AR run (or HF causal LM) scoring generative perplexity.")] = None,
    num_samples: Annotated[int, typer.Option(help="With --sampling: samples per variant.")] = 8,
    length: Annotated[Optional[int], typer.Option(help="With --sampling: tokens per sample (default: the context).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object; no progress bars.")] = False,
):
    """Train every variant of a grid for the same tokens and seeds, evaluate each with the
    uniform-masking NELBO, and write report.md/.csv/.json and val_curves.png. Re-running resumes:
    finished runs are skipped, interrupted ones continue.

    With --sampling RUN, compare samplers, orders and step counts on one trained run instead: NFE,
    wall time, generative perplexity under --judge, and unigram entropy.

    Example: atat ablate --grid atat --tokens 300000 --seeds 2
    Example: atat ablate --sampling runs/atat-tiny-pydocs --judge runs/ar-tiny-pydocs
    """
    from atat_cli.ablation import build_report, load_grid, run_grid, write_report
    from atat_cli.ablation.report import markdown_table
    from atat_cli.errors import AtatError
    from atat_cli.paths import runs_root

    if sampling is not None:
        return _ablate_sampling(sampling, "sampling" if grid == "atat" else grid, judge, num_samples, length,
                                variants, out_dir, json_out)
    if tokens < 1 or seeds < 1 or mc < 1 or (workers is not None and workers < 1):
        raise AtatError("--tokens, --seeds, --mc and --workers must be at least 1")
    spec = load_grid(grid, only=variants)
    folder = out_dir or runs_root() / f"ablate-{spec.name}"
    records = run_grid(spec, size=size, data=data, tokens=tokens, seeds=seeds, out=folder, mc=mc,
                       overrides=list(overrides or []), log=log, progress=not json_out, workers=workers)
    report = build_report(records, spec.baseline, spec.name)
    report.update({"size": size, "data": data, "tokens": tokens, "seeds": seeds, "mc": mc})
    files = write_report(report, folder)
    if json_out:
        print_json(report)
        return
    out.print(f"[bold]Grid {spec.name}[/] on {data}, size {size}, {tokens:,} tokens x {seeds} seeds "
              f"(baseline {spec.baseline}; bits/byte from the uniform-masking NELBO, AR: exact NLL)\n")
    out.print(markdown_table(report), highlight=False, markup=False)
    out.print(f"\nWrote {', '.join(str(f) for f in files)}")


def _ablate_sampling(run, grid, judge, num_samples, length, variants, out_dir, json_out):
    import json

    from atat_cli.ablation.sampling_grid import load_sampling_grid, run_sampling_grid, sampling_markdown
    from atat_cli.device import default_device
    from atat_cli.errors import AtatError
    from atat_cli.runs import load_run
    from atat_cli.sampling import load_judge

    if num_samples < 1:
        raise AtatError("--num-samples must be at least 1")
    device = default_device()
    trained = load_run(run, device)
    settings = load_sampling_grid(grid, has_importance=trained.importance is not None)
    if variants:
        missing = [v for v in variants if v not in settings]
        if missing:
            raise AtatError(f"unknown sampling variant '{missing[0]}'", f"variants: {', '.join(settings)}")
        settings = {k: v for k, v in settings.items() if k in variants}
    judge_model = load_judge(judge, device) if judge else None
    rows = run_sampling_grid(trained, settings, judge=judge_model, num_samples=num_samples, length=length, log=log)
    report = {"run": str(trained.checkpoint), "judge": judge, "num_samples": num_samples, "rows": rows}
    folder = out_dir or trained.checkpoint.parent / "ablate-sampling"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sampling.json").write_text(json.dumps(report, indent=2))
    (folder / "sampling.md").write_text(sampling_markdown(rows) + "\n")
    if json_out:
        print_json(report)
        return
    out.print(sampling_markdown(rows), highlight=False, markup=False)
    out.print(f"\nWrote {folder / 'sampling.md'} and {folder / 'sampling.json'}")
