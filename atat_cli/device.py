"""Device and mixed-precision choices, made once per run."""

from __future__ import annotations

import contextlib
from functools import cache

import torch


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@cache
def cpu_has_bf16_matmul() -> bool:
    """True on CPUs with bf16 matrix units (AVX512-BF16, AMX), where bf16 products run several times
    faster than fp32 through oneDNN. Elsewhere bf16 on CPU is emulated and slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA with bf16 support and on bf16-capable CPUs, else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16_matmul() else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast context: weights and optimiser stay fp32, matrix products run in bf16."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
