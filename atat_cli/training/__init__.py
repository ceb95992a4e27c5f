"""Training: the loop, checkpoints, EMA, precision and torchrun plumbing."""

from atat_cli.training.trainer import Trainer, TrainResult, lr_factor

__all__ = ["Trainer", "TrainResult", "lr_factor"]
