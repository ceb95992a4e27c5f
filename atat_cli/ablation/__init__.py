"""Ablations: grids of named training variants run at an equal token budget, and their report."""

from atat_cli.ablation.grid import Grid, Variant, load_grid
from atat_cli.ablation.report import build_report, write_report
from atat_cli.ablation.runner import run_grid
from atat_cli.ablation.training_grid import ablate_training

__all__ = ["Grid", "Variant", "ablate_training", "build_report", "load_grid", "run_grid", "write_report"]
