"""`atat ablate`: a grid of training variants at an equal token budget, summarised in one table."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import log, out, print_json


def ablate(
    grid: Annotated[str, typer.Option(help="Built-in grid (atat, parameterisation, data_constrained, temperature) or a YAML file of variants.")] = "atat",
    data: options.DataOpt = "pydocs",
    size: options.SizeOpt = "tiny",
    tokens: Annotated[int, typer.Option(help="Training tokens per run (the equal budget; a variant with `epochs` trains epochs x data.unique_tokens instead).")] = 300_000,
    seeds: Annotated[int, typer.Option(help="Seeds per variant.")] = 2,
    variants: Annotated[Optional[list[str]], typer.Option("--variant", help="Run only these variants (repeatable).")] = None,
    out_dir: options.OutDirOpt = None,
    mc: options.McOpt = 4,
    workers: Annotated[Optional[int], typer.Option(help="Runs trained at once, one per GPU (default: the number of visible GPUs, else 1).")] = None,
    overrides: options.OverridesOpt = None,
    sampling: Annotated[Optional[str], typer.Option(help="Compare samplers on this trained run instead of training (grid default: sampling).")] = None,
    judge: options.JudgeOpt = None,
    num_samples: options.NumSamplesOpt = 8,
    length: options.LengthOpt = None,
    json_out: options.JsonOpt = False,
):
    """Train every variant of a grid for the same tokens and seeds, evaluate each with the
    uniform-masking NELBO, and write report.md/.csv/.json and val_curves.png. Re-running resumes:
    finished runs are skipped, interrupted ones continue.

    --data, --size and --set apply to every variant; runs and report go to --out, by default
    runs/ablate-<grid>.

    With --sampling RUN, compare samplers, orders and step counts on one trained run instead: NFE,
    wall time, generative perplexity under --judge, and unigram entropy. Each variant generates
    --num-samples samples of --length tokens (default: one context) from the same seed; the report
    (sampling.md/.json) goes to --out, by default ablate-sampling in the run's folder.

    Example: atat ablate --grid atat --tokens 300000 --seeds 2
    Example: atat ablate --sampling runs/atat-tiny-pydocs --judge runs/ar-tiny-pydocs
    """
    from atat_cli.ablation.report import markdown_table
    from atat_cli.ablation.training_grid import ablate_training

    if sampling is not None:
        return _ablate_sampling(sampling, "sampling" if grid == "atat" else grid, judge, num_samples, length,
                                variants, out_dir, json_out)
    report, files = ablate_training(grid, size=size, data=data, tokens=tokens, seeds=seeds, mc=mc, only=variants,
                                    out=out_dir, overrides=list(overrides or []), workers=workers, log=log,
                                    progress=not json_out)
    if json_out:
        print_json(report)
        return
    out.print(f"[bold]Grid {report['grid']}[/] on {data}, size {size}, {tokens:,} tokens x {seeds} seeds "
              f"(baseline {report['baseline']}; bits/byte from the uniform-masking NELBO, AR: exact NLL)\n")
    out.print(markdown_table(report), highlight=False, markup=False)
    out.print(f"\nWrote {', '.join(str(f) for f in files)}")


def _ablate_sampling(run, grid, judge, num_samples, length, variants, out_dir, json_out):
    from atat_cli.ablation.sampling_grid import ablate_sampling, sampling_markdown
    from atat_cli.errors import AtatError

    if num_samples < 1:
        raise AtatError("--num-samples must be at least 1")
    report, files = ablate_sampling(run, grid, judge=judge, num_samples=num_samples, length=length, only=variants,
                                    out=out_dir, log=log)
    if json_out:
        print_json(report)
        return
    out.print(sampling_markdown(report["rows"]), highlight=False, markup=False)
    out.print(f"\nWrote {' and '.join(str(f) for f in files)}")
