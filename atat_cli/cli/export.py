"""`atat export`: a run as a folder in the Hugging Face layout, to share or to load elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atat_cli.cli import options
from atat_cli.cli.output import out, print_json


def export(
    run: Annotated[str, typer.Argument(help="Run folder or checkpoint to export.")],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write (new or empty).")],
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Export the EMA weights (what eval and sample use), or the raw ones.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export in DIR (nothing else is ever replaced).")] = False,
    json_out: options.JsonOpt = False,
):
    """Write a run's model to DIR: config.json (the architecture, and the run's config, corpus and
    step), model.safetensors (the weights) and tokenizer/ (the tokenizer's files).

    Every command that takes RUN accepts DIR: sample and gif need nothing else, not even the
    corpus; eval needs the corpus the run was trained on, and checks its tokenizer. Loading DIR
    reads only JSON and safetensors (no pickle), so a folder from someone else is safe to load.

    Examples:
      atat export runs/mdlm-tiny-pydocs shared/mdlm-tiny
      atat sample shared/mdlm-tiny --prompt "The future of AI is"
    """
    from atat_cli.runs.export import export_run

    summary = export_run(run, folder, ema=ema, force=force)
    if json_out:
        print_json(summary)
        return
    out.print(f"Wrote {summary['out']}: {summary['method']} at step {summary['step']}, {summary['weights']} weights, "
              f"{summary['parameters']:,} parameters, tokenizer {summary['tokenizer']} "
              f"({len(summary['files'])} files)", highlight=False)
