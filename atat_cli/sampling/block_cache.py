"""Cached block decoding: Fast-dLLM's dual cache (Wu et al. 2025) on the bidirectional DiT, and
the exact prefix cache of a block-causal DiT (model.block_size, BD3-LM).

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

A block-causal denoiser needs no approximation: block k sees the clean blocks before it, whose
keys and values (computed at noise level 0, as in training) never change while block k is
decoded. `cache="prefix"` runs each finished block once, and every step on the block's positions
alone, attending to the cached blocks and to the block: the same logits as the uncached
two-copy pass, at about block / (2 window) of its cost per step.
"""

from __future__ import annotations

import torch

CACHES = ("none", "dual", "prefix")


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


def block_level(x: torch.Tensor, start: int, end: int, mask_id: int) -> torch.Tensor:
    """(B,) the masked fraction of the block [start, end): a block-causal denoiser's noise level,
    since in training every block is masked at the rate it is conditioned on."""
    return (x[:, start:end] == mask_id).float().mean(dim=1)


class PrefixCache:
    """The keys and values of a window's finished blocks, per layer, for a block-causal denoiser:
    `model_call(x, level, kv_caches=None, at=None)` is the DiT. It grows one block per call, each
    block run alone at noise level 0 attending to the blocks already cached (the clean copy of
    training, block-causal), so every finished block is computed once per window."""

    def __init__(self, model_call, n_layers: int, block_size: int):
        self.model_call = model_call
        self.n_layers, self.block_size = n_layers, block_size
        self.window: int | None = None
        self.caches: list[dict] = []
        self.done = 0  # positions of the window in the caches

    def extend(self, x: torch.Tensor, window: int, upto: int) -> list[dict]:
        """The caches holding positions [0, upto) of x, the tokens of the window starting at
        `window` (a new window starts them again: its positions are not the last one's)."""
        if window != self.window or self.done > upto:
            self.window, self.caches, self.done = window, [{} for _ in range(self.n_layers)], 0
        B = x.shape[0]
        while self.done < upto:
            end = self.done + self.block_size
            no_rows = torch.zeros(B, end - self.done, dtype=torch.bool, device=x.device)  # keys and values only
            self.model_call(x[:, self.done : end], torch.zeros(B, device=x.device), kv_caches=self.caches, at=no_rows)
            self.done = end
        return self.caches


class PrefixCacheDenoiser:
    """A block-causal denoiser for one block [start, end) of the window starting at `window`,
    whose positions before `start` are finished: each call runs the block's positions alone on
    copies of the prefix caches (`PrefixCache`), so the caches keep the finished blocks only.
    Only the block's logits are returned right; the noise level is the block's masked fraction
    (`block_level`)."""

    whole_batch = True

    def __init__(self, prefix: PrefixCache, window: int, start: int, end: int, mask_id: int):
        self.prefix, self.window = prefix, window
        self.start, self.end = start, end
        self.mask_id = mask_id
        self.logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        caches = self.prefix.extend(x, self.window, self.start)
        level = block_level(x, self.start, self.end, self.mask_id)
        block = self.prefix.model_call(x[:, self.start : self.end], level, kv_caches=[dict(c) for c in caches])
        if self.logits is None:
            self.logits = block.new_zeros(x.shape[0], x.shape[1], block.shape[-1])
        self.logits[:, self.start : self.end] = block
        return self.logits
