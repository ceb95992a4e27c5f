"""`atat heatmap`: importance over a text and time (ATAT runs), or training dynamics of any run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import out, print_json


def heatmap(
    run: options.RunArg = None,
    text: Annotated[Optional[str], typer.Option(help="Text whose tokens' importance to draw at several t (ATAT runs).")] = None,
    training: Annotated[bool, typer.Option("--training", help="Draw training dynamics from the run's metrics.jsonl instead.")] = False,
    out_path: options.OutFileOpt = None,
    json_out: options.JsonOpt = False,
):
    """Heatmaps of what the model learned and how training went.

    --text: the ATAT importance estimator's score of each token of the text (x) at t = 0.1 .. 0.9 (y), with the mean over t below; tokens are rated clean, as during training.

    --training: from metrics.jsonl, loss and logit-gradient norm by corruption band (low m<0.3, mid, high m>=0.7; blank where a batch had none) over logged steps, and the curriculum level and stage (ATAT runs). Also writes curves.png next to --out: train loss and validation NELBO against training tokens.

    The picture goes to --out, a .png file: by default importance.png, or training.png with --training. --json prints the plotted values.

    Examples:
      atat heatmap --text "Return a new sorted list from the items in iterable."
      atat heatmap runs/atat-tiny-pydocs --training --out pictures/training.png
    """
    from atat_cli.errors import AtatError
    from atat_cli.viz.gif import check_writable

    if training == (text is not None):
        raise AtatError("choose what to draw: --text \"...\" (importance, ATAT runs) or --training (metrics log)")
    out_path = Path("training.png" if training else "importance.png") if out_path is None else out_path
    if out_path.suffix.lower() != ".png":
        raise AtatError(f"--out {out_path} must be a .png file")
    check_writable(out_path)  # before loading a model or reading a long log
    if training:
        _training(run, out_path, json_out)
    else:
        _importance(run, text, out_path, json_out)


def _training(run, out_path: Path, json_out: bool) -> None:
    from atat_cli.runs import resolve_run_folder
    from atat_cli.viz.heatmaps import draw_training

    summary = draw_training(resolve_run_folder(run), out_path)
    if json_out:
        print_json(summary)
        return
    out.print(f"Wrote {out_path} ({len(summary['steps'])} logged steps) and {summary['curves']}", highlight=False)


def _importance(run, text: str, out_path: Path, json_out: bool) -> None:
    from atat_cli.device import default_device
    from atat_cli.runs import load_run
    from atat_cli.viz.heatmaps import draw_importance

    summary = draw_importance(load_run(run, default_device()), text, out_path)
    if json_out:
        print_json(summary)
        return
    out.print(f"Wrote {out_path} ({len(summary['tokens'])} tokens x {len(summary['t'])} values of t)", highlight=False)
