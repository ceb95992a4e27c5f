"""`atat ablate`'s training grid from start to finish: train every variant (resuming what is
there), evaluate, and write the report into one folder."""

from __future__ import annotations

from pathlib import Path

from atat_cli.ablation.grid import load_grid
from atat_cli.ablation.report import build_report, write_report
from atat_cli.ablation.runner import run_grid
from atat_cli.data import require_known_corpus
from atat_cli.errors import require
from atat_cli.paths import runs_root


def ablate_training(grid: str, *, size: str, data: str, tokens: int, seeds: int, mc: int = 4,
                    only: list[str] | None = None, out: Path | None = None, overrides: list[str] = (),
                    workers: int | None = None, log=print, progress: bool = True) -> tuple[dict, list[Path]]:
    """Returns the report (what `--json` prints) and the files written (report.md/.csv/.json and
    the validation-curve plot) in `out`, by default runs/ablate-<grid>."""
    require(tokens >= 1 and seeds >= 1 and mc >= 1 and (workers is None or workers >= 1),
            "--tokens, --seeds, --mc and --workers must be at least 1")
    require_known_corpus(data)
    spec = load_grid(grid, only=only)
    folder = Path(out) if out is not None else runs_root() / f"ablate-{spec.name}"
    records = run_grid(spec, size=size, data=data, tokens=tokens, seeds=seeds, out=folder, mc=mc,
                       overrides=list(overrides), log=log, progress=progress, workers=workers)
    report = build_report(records, spec.baseline, spec.name)
    report.update({"size": size, "data": data, "tokens": tokens, "seeds": seeds, "mc": mc})
    return report, write_report(report, folder)
