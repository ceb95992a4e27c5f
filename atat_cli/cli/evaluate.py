"""`atat eval`: the uniform-masking NELBO (AR: exact NLL) of a run on a split, or lm-eval tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import out, print_json


def evaluate(
    run: options.RunArg = None,
    data: options.DataOpt = None,
    split: Annotated[str, typer.Option(help="valid or test.")] = "valid",
    mc: options.McOpt = 4,
    batch_size: options.BatchSizeOpt = 16,
    max_blocks: Annotated[int, typer.Option(help="Evaluate at most this many blocks (0 = all).")] = 0,
    seed: options.SeedOpt = 0,
    block_size: Annotated[Optional[int], typer.Option(
        help="Also bound the NLL of decoding in blocks of this size left to right, each block in a random order "
             "(1 = exact left-to-right NLL, one pass per position; the context length = any order).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="lm-evaluation-harness tasks to score instead, comma-separated "
                                                 "(needs the lmeval extra), e.g. lambada_openai,hellaswag.")] = None,
    task_dir: Annotated[Optional[Path], typer.Option(help="A folder of lm-eval task YAMLs to add to the known tasks.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="lm-eval: score at most this many documents per task.")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(help="lm-eval: few-shot examples per prompt (default: the task's).")] = None,
    json_out: options.JsonOpt = False,
):
    """Evaluate a run: NELBO (nats/token), perplexity bound, bits per token and per byte, and
    mask accuracy by corruption band (low < 0.3 <= mid < 0.7 <= high); on a corpus with a known
    entropy floor (synthetic), also the floor and the gap to it in bits/byte.

    By default on the run's own corpus; --data names another one, with the run's tokenizer. The
    evaluation noise is seeded (--seed), so results repeat.

    With --tasks, scores lm-evaluation-harness tasks instead: log-likelihoods are exact for AR and,
    for diffusion runs, minus the NELBO of the continuation given the clean context (--mc times
    per request: a lower bound); see atat_cli/runs/harness.py.

    Example: atat eval runs/mdlm-tiny-pydocs --split test --mc 8 --json
    Example: atat eval runs/mdlm-tiny-pydocs --tasks lambada_openai --limit 100
    """
    if tasks is not None:
        return _evaluate_tasks(run, tasks, task_dir, limit, num_fewshot, mc, batch_size, seed, json_out)
    from atat_cli.runs import evaluate_run

    result = evaluate_run(run, data=data, split=split, mc=mc, batch_size=batch_size, max_blocks=max_blocks,
                          seed=seed, progress=not json_out, block_size=block_size)
    if json_out:
        print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{result['run']} ({result['method']}, step {result['step']}) on {result['data']}/{split}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(f"{bound_label(result)} (nats/token)", f"{result['nelbo']:.4f} ± {result['nelbo_stderr']:.4f}")
    table.add_row("perplexity" + (" (upper bound)" if result["method"] != "ar" else ""), f"{result['ppl']:.2f}")
    table.add_row("bits/token", f"{result['bits_per_token']:.4f}")
    table.add_row("bits/byte", f"{result['bits_per_byte']:.4f}")
    if "own_nelbo" in result:  # a per-token schedule: the NELBO of the model's own forward process
        table.add_row("own-process NELBO (nats/token)", f"{result['own_nelbo']:.4f} ± {result['own_nelbo_stderr']:.4f}")
        table.add_row("own-process bits/byte", f"{result['own_bits_per_byte']:.4f}")
    if "order_nelbo" in result:  # decoded block by block, left to right
        kind = "exact NLL" if result["block_size"] == 1 else "NLL bound"
        table.add_row(f"blocks of {result['block_size']}, left to right: {kind} (nats/token)",
                      f"{result['order_nelbo']:.4f} ± {result['order_nelbo_stderr']:.4f}")
        table.add_row(f"blocks of {result['block_size']}: bits/byte", f"{result['order_bits_per_byte']:.4f}")
    if result.get("objective"):
        table.add_row("training objective", result["objective"])
    if "floor_bits_per_byte" in result:
        table.add_row("entropy floor (bits/byte)", f"{result['floor_bits_per_byte']:.4f}")
        table.add_row("gap to floor (bits/byte)", f"{result['gap_to_floor_bits_per_byte']:+.4f}")
    table.add_row("tokens / bytes", f"{result['tokens']:,} / {result['bytes']:,}")
    if "importance_spearman" in result:
        table.add_row("importance Spearman vs loss", f"{result['importance_spearman']:.3f}")
    for band, acc in (result.get("mask_accuracy") or {}).items():
        table.add_row(f"mask accuracy ({band})", "n/a" if acc is None else f"{acc:.3f}")
    out.print(table)


def bound_label(result: dict) -> str:
    """What `nelbo` is: AR's exact NLL, the bound of the run's parameterisation under uniform
    masking, or a block-causal denoiser's blockwise bound."""
    from atat_cli.objectives import loss_name

    kind = {"d3pm": f"D3PM discrete-time NELBO, T = {result.get('diffusion_steps')}",
            "sedd": "SEDD score-entropy NELBO"}.get(result.get("parameterization"), loss_name(result["method"]))
    if result.get("model_block_size"):
        return f"{kind} (BD3-LM: blocks of {result['model_block_size']} left to right, each masked uniformly)"
    return kind if result["method"] == "ar" else f"{kind} (uniform masking)"


def _evaluate_tasks(run, tasks: str, task_dir, limit, num_fewshot, mc, batch_size, seed, json_out) -> None:
    from rich.table import Table

    from atat_cli.device import default_device
    from atat_cli.errors import AtatError
    from atat_cli.runs import load_run
    from atat_cli.runs.harness import run_tasks

    if task_dir is not None and not task_dir.is_dir():
        raise AtatError(f"task folder not found: {task_dir}")
    trained = load_run(run, default_device())
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    result = run_tasks(trained, names, task_dir=str(task_dir) if task_dir else None, limit=limit,
                       num_fewshot=num_fewshot, mc=mc, seed=seed or 0, batch_size=batch_size, quiet=json_out)
    report = {"run": str(trained.checkpoint.parent), "method": trained.cfg.method, "step": trained.step,
              "mc": mc if trained.cfg.method != "ar" else None, "results": result["results"]}
    if json_out:
        print_json(report)
        return
    table = Table(title=f"{report['run']} ({report['method']}, step {report['step']}): lm-eval")
    for column in ("task", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for task, metrics in result["results"].items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key:
                stderr = metrics.get(key.replace(",", "_stderr,", 1))
                shown = f"{value:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, (int, float)) else "")
                table.add_row(task, key.split(",")[0], shown)
    out.print(table)
