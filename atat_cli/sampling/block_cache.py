"""Cached block decoding: Fast-dLLM's dual cache (Wu et al. 2025) on the bidirectional DiT.

Semi-autoregressive generation samples one block of positions at a time while the rest of the
window stays fixed: the finished prefix, and the still-masked positions after the block. With
`cache="dual"` the first denoiser call of a block runs the whole window and keeps every layer's
keys and values; each later call of that block runs only the block's positions, which attend to
the cached keys and values of all the others. A step then costs about block / window of a full
pass (plus attention over the window).

It is an approximation, not an exact cache: the DiT is bidirectional, so the hidden states
outside the block depend on the block's tokens and on the noise level, and both change while
the block is decoded; the cache keeps their values from the block's first call. The next block
starts with a full pass, so the error never outlives a block. `benchmarks/sampling_nfe.py`
measures the speed-up and the quality change against no cache.

    denoiser = DualCacheDenoiser(model_call, start, end)   # one per block
    logits = denoiser(x, level)                             # (B, T, V + 1), valid on [start, end)
"""

from __future__ import annotations

import torch

CACHES = ("none", "dual")


class DualCacheDenoiser:
    """A denoiser for one block [start, end) of a window: `model_call(x, level, kv_caches=None,
    start=None)` is the DiT (sampling/samplers.py's denoiser protocol plus the cache arguments).
    The logits it returns are right only inside the block, which is all a sampler reads when it
    fills that block; it must be called on the whole batch (whole_batch), since the cache holds
    every row."""

    whole_batch = True

    def __init__(self, model_call, start: int, end: int, n_layers: int):
        self.model_call = model_call
        self.start, self.end = start, end
        self.n_layers = n_layers
        self.caches: list[dict] | None = None
        self.logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if self.caches is None:
            self.caches = [{} for _ in range(self.n_layers)]
            self.logits = self.model_call(x, level, kv_caches=self.caches)
            return self.logits
        self.logits[:, self.start : self.end] = self.model_call(x[:, self.start : self.end], level,
                                                                kv_caches=self.caches, start=self.start)
        return self.logits
