"""`atat train`: parse, compose the config, hand over to the Trainer, print the outcome."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import log, out, print_json


def train(
    size: options.SizeOpt = None,
    data: options.DataOpt = None,
    method: options.MethodOpt = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (train.max_steps).")] = None,
    out_dir: options.OutDirOpt = None,
    config: Annotated[Optional[str], typer.Option(help="YAML file of config sections, or a shipped preset such as atat/no_curriculum (see `atat config list`).")] = None,
    overrides: options.OverridesOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (or the newest matching run) from its last checkpoint.")] = False,
    seed: options.SeedOpt = None,
    compile: Annotated[bool, typer.Option("--compile", help="Use torch.compile (train.compile).")] = False,
    sample: Annotated[bool, typer.Option("--sample/--no-sample", help="End by printing one short unconditional sample of the trained model.")] = True,
    json_out: options.JsonOpt = False,
):
    """Train a model. Precedence: defaults < size preset < --config < --set < flags.

    --data sets data.name (default pydocs) and --seed train.seed (initialisation, data order and
    noise). The run is written to --out, by default runs/<method>-<size>-<data>, numbered -2, -3,
    ... so that a new training never reuses a finished run's folder (with --resume: the newest).

    Example: atat train --size tiny --max-steps 300
    """
    from atat_cli.config import load_config
    from atat_cli.runs import default_run_dir
    from atat_cli.training import Trainer
    from atat_cli.training.distributed import DistEnv

    flags = list(overrides or [])
    if data is not None:
        flags.append(f"data.name={data}")
    if max_steps is not None:
        flags.append(f"train.max_steps={max_steps}")
    if seed is not None:
        flags.append(f"train.seed={seed}")
    if compile:
        flags.append("train.compile=true")
    cfg = load_config(size=size, method=method, config_file=config, overrides=flags)
    run_dir = out_dir or default_run_dir(cfg.method, cfg.size, cfg.data.name, resume)
    result = Trainer(cfg, run_dir, resume=resume, progress=not json_out, log=log).run()
    if not DistEnv.from_env().is_main:  # under torchrun only rank 0 reports
        return
    summary = {"run": str(run_dir), "step": result.step, "interrupted": result.interrupted,
               "best_val_nelbo": result.best_val, "checkpoint": str(result.last_checkpoint),
               "seconds": round(result.seconds, 2)}
    if sample and not result.interrupted:
        from atat_cli.device import default_device
        from atat_cli.runs import load_run
        from atat_cli.sampling import preview

        summary["sample"] = preview(load_run(run_dir, default_device()))
    if json_out:
        print_json(summary)
    else:
        from atat_cli.objectives import loss_name

        status = "[yellow]interrupted[/]" if result.interrupted else "[green]done[/]"
        best = f"{result.best_val:.4f}" if result.best_val is not None else "n/a"
        out.print(f"{status}: {run_dir} at step {result.step}, best val {loss_name(cfg.method)} {best} nats/token "
                  f"({result.seconds:.0f} s). Next: atat eval {run_dir}")
        if "sample" in summary:
            from rich.rule import Rule
            from rich.text import Text

            out.print(Rule("a sample of 64 tokens (atat sample for more)", style="dim"))
            out.print(Text(summary["sample"]))
    if result.interrupted:
        raise typer.Exit(130)
