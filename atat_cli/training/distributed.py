"""torchrun support: rank and world size from the environment, no global state.

Single-process runs get rank 0 of 1 and never touch torch.distributed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistEnv:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def init(self) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            torch.distributed.init_process_group(backend)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(model, device_ids=ids)

    def mean(self, value: float) -> float:
        """Average a scalar over ranks (for logging and validation); NaNs (nothing measured on a
        rank) are left out, and the result is NaN only when no rank measured anything."""
        finite = math.isfinite(value)
        if not self.enabled:
            return value
        t = torch.tensor([value if finite else 0.0, float(finite)], dtype=torch.float64, device=self.device())
        torch.distributed.all_reduce(t)
        return t[0].item() / t[1].item() if t[1].item() else float("nan")

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()
