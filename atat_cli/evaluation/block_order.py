"""The likelihood of decoding a masked-diffusion denoiser block by block, left to right.

The same denoiser defines many generative processes: MDLM's (every position masked at one rate,
revealed in any order), or blocks of b positions decoded left to right, each block's positions in
a random order, with the blocks to its right still masked. With the denoiser fed the masked
fraction of its input as the noise level (a function of x_t, so its prediction depends on x_t
only), the NLL of that process is bounded by the any-order NLL of each block given the blocks
before it (Jensen over the random order):

    B_b(x) = sum_k  E_sigma  sum_j  -log p(x_{sigma_j} | x_{<block k}, block k's positions sigma_{<j}, rest masked)

b = T is the any-order (MDLM-like) bound of the whole block of T; b = 1 is the exact NLL of
left-to-right decoding (one forward pass per position, nothing to average). One draw per block
masks a uniform number m in 1..n of the block's n positions at random and scores them with
weight n / m: an unbiased estimate of the block's term (the standard discrete any-order
estimator), and a valid upper bound on the NLL of that decoding process for every b.
"""

from __future__ import annotations

import torch

from atat_cli.diffusion import masked_token_nll


def block_order_nats(model, x0: torch.Tensor, block_size: int, mask_id: int, generator: torch.Generator,
                     rows_per_pass: int = 256) -> torch.Tensor:
    """(B,) one draw of B_b in nats for each sequence of x0 (B, T): a row per (sequence, block),
    run through the model `rows_per_pass` rows at a time."""
    B, T = x0.shape
    device = x0.device
    block_of = torch.arange(T, device=device) // block_size  # (T,)
    K = int(block_of[-1]) + 1
    size = torch.bincount(block_of, minlength=K)  # (K,) positions per block (the last may be short)
    k = torch.arange(K, device=device).repeat(B)  # (B*K,) the block each row scores
    x = x0.repeat_interleave(K, dim=0)
    n = size[k]
    m = (torch.rand(B * K, generator=generator, device=device) * n).long().clamp(max=n - 1) + 1  # U{1..n}
    inside = block_of[None] == k[:, None]
    keys = torch.where(inside, torch.rand(x.shape, generator=generator, device=device), torch.full_like(x, 2.0, dtype=torch.float))
    rank = keys.argsort(dim=1).argsort(dim=1)  # the block's positions take ranks 0..n-1 in a random order
    scored = inside & (rank < m[:, None])
    masked = scored | (block_of[None] > k[:, None])
    x_t = torch.where(masked, mask_id, x)
    level = masked.float().mean(dim=1)
    nats = torch.empty(B * K, dtype=torch.float64, device=device)
    for start in range(0, B * K, rows_per_pass):
        rows = slice(start, start + rows_per_pass)
        logits = model(x_t[rows], level[rows], at=scored[rows])
        nll = masked_token_nll(logits, x[rows], scored[rows], mask_id)
        nats[rows] = nll.sum(dim=1).double() * n[rows] / m[rows]
    return nats.view(B, K).sum(dim=1)
