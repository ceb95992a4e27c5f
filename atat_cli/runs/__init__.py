"""Run folders: resolving RUN arguments, naming new runs, loading a trained model, evaluating it,
exporting it as a Hugging Face style folder (which loads like a run).

    from atat_cli.runs import evaluate_run, export_run, load_run
    result = evaluate_run("runs/mdlm-tiny-pydocs", split="test", mc=8)
    export_run("runs/mdlm-tiny-pydocs", "shared/mdlm-tiny")
"""

from atat_cli.runs.export import export_run
from atat_cli.runs.folders import default_run_dir, resolve_checkpoint, resolve_run_folder
from atat_cli.runs.loading import TrainedRun, load_run
from atat_cli.runs.report import evaluate_run

__all__ = ["TrainedRun", "default_run_dir", "evaluate_run", "export_run", "load_run", "resolve_checkpoint",
           "resolve_run_folder"]
