"""`atat import mdlm`: a model trained by MDLM's own code, as a folder every RUN argument takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import out, print_json


def mdlm(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A folder with MDLM's config.json and model.safetensors, or a hub id (kuleshov-group/mdlm-owt).")],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write (new or empty).")],
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", help="Folder or hub id with the tokenizer files (tokenizer.json, or vocab.json + merges.txt); "
                            "default: SOURCE's, else GPT-2's from the hub.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export in DIR (nothing else is ever replaced).")] = False,
    json_out: options.JsonOpt = False,
):
    """Import MDLM's released DiT (Sahoo et al. 2024) into DIR, as `atat export` writes a run.

    DIR holds its weights renamed onto atat's DiT (with MDLM's norm weights and time input), its
    tokenizer and MDLM's log-linear schedule, so that sample, gif and eval run it with atat's
    samplers.

    Only config.json and model.safetensors are read, never a pickle. Evaluation needs a corpus
    prepared with the model's tokenizer: atat data fetch NAME --tokenizer DIR/tokenizer.

    Examples:
      atat import mdlm kuleshov-group/mdlm-owt shared/mdlm-owt
      atat sample shared/mdlm-owt --prompt "The future of AI is" --steps 128
      atat data fetch wikitext103 --tokenizer shared/mdlm-owt/tokenizer
      atat eval shared/mdlm-owt --data wikitext103
    """
    from atat_cli.runs.import_mdlm import import_mdlm

    summary = import_mdlm(source, folder, tokenizer=tokenizer, force=force)
    if json_out:
        print_json(summary)
        return
    origin = f"{summary['hub_id']} at {summary['revision'][:12]}" if "hub_id" in summary else summary["path"]
    out.print(f"Wrote {summary['out']}: MDLM's DiT from {origin}, {summary['layers']} x {summary['width']}, "
              f"{summary['heads']} heads, context {summary['seq_len']}, {summary['parameters']:,} parameters, "
              f"vocabulary {summary['vocab_size']:,} + mask id {summary['mask_id']:,}, time input "
              f"{summary['time_input']} ({len(summary['files'])} files)", highlight=False)
