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


def _run_folder(run: str | None) -> Path:
    """The folder of RUN without loading a model: a folder as given, a checkpoint's folder, or the newest run."""
    from atat_cli.runs import resolve_checkpoint

    if run is not None and Path(run).is_dir():
        return Path(run)
    return resolve_checkpoint(run).parent


def _training(run, out_path: Path, json_out: bool) -> None:
    from atat_cli.viz.heatmaps import load_metrics, plot_curves, plot_training

    folder = _run_folder(run)
    records = load_metrics(folder / "metrics.jsonl")
    plotted = plot_training(records, out_path, title=f"Training dynamics · {folder.name}")
    curves_path = out_path.with_name("curves.png")
    plot_curves(records, curves_path, title=f"Training curves · {folder.name}")
    summary = {"run": str(folder), "out": str(out_path), "curves": str(curves_path),
               "steps": plotted["steps"].tolist(), "curriculum": plotted["curriculum"] is not None}
    if json_out:
        print_json(summary)
        return
    out.print(f"Wrote {out_path} ({len(plotted['steps'])} logged steps) and {curves_path}", highlight=False)


def _importance(run, text: str, out_path: Path, json_out: bool) -> None:
    from atat_cli.device import default_device
    from atat_cli.runs import load_run
    from atat_cli.viz.heatmaps import importance_over_time, plot_importance

    trained = load_run(run, default_device())
    pieces, times, matrix = importance_over_time(trained, text)
    name = trained.checkpoint.parent.name
    plot_importance(matrix, pieces, times, out_path, title=f"Token importance over time · {name} (step {trained.step})")
    if json_out:
        print_json({"run": str(trained.checkpoint.parent), "out": str(out_path), "tokens": pieces,
                    "t": times.tolist(), "importance": matrix.round(4).tolist()})
        return
    out.print(f"Wrote {out_path} ({len(pieces)} tokens x {len(times)} values of t)", highlight=False)
