"""Mamba's selective scan: a linear recurrence whose decay and input depend on the token.

Per channel d (of Di) and state dimension n (of N), with inputs u, step sizes delta (> 0), the
diagonal state matrix A (< 0) and the token-dependent projections B_t, C_t:

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t        h_0 = 0, h_t: (B, Di, N)
    y_t = C_t . h_t + D u_t                                 (the dot over n)

(Gu & Dao 2023, equations 2a-2b with the zero-order-hold decay and the Euler input, as in
their reference `selective_scan_ref`.) `selective_scan` runs mamba-ssm's fused CUDA kernel when
the package is installed and the tensors are on CUDA, and otherwise `chunked_scan`, the same
recurrence in plain PyTorch: batched over everything, and over positions a parallel prefix scan
within chunks of `chunk` positions, with the state carried from one chunk to the next.

Why a prefix scan and not the closed form h_t = e^{S_t} sum_s e^{-S_s} (delta B u)_s with S the
cumulative sum of log-decays: e^{-S_s} overflows in fp32 once a chunk's decay passes e^-88,
which a trained channel with a large delta * |A| can reach within a few positions. The prefix scan only
multiplies decays in (0, 1] and adds, so it never overflows and needs no clamping. The
recurrence always runs in fp32, also under bf16 autocast.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

SCAN_CHUNK = 32  # positions per chunk: log2(32) = 5 doubling steps each, and few chunks to carry between


def selective_scan(u, delta, A, B, C, D, chunk: int = SCAN_CHUNK, kernel: str = "auto",
                   compiled: bool = False) -> torch.Tensor:
    """u, delta: (B, T, Di); A: (Di, N); B, C: (B, T, N); D: (Di,) -> y (B, T, Di) in u's dtype.
    kernel: auto (mamba-ssm's CUDA kernel when installed and u is on CUDA, else `chunked_scan`)
    or torch (always `chunked_scan`). compiled: `chunked_scan` with its chunk step compiled."""
    fused = _mamba_kernel() if kernel == "auto" and u.is_cuda else None
    if fused is None:
        return chunked_scan(u, delta, A, B, C, D, chunk, compiled)
    # The kernel takes channels before positions: (B, Di, T) and (B, N, T); A and D stay fp32.
    dtype = u.dtype
    y = fused(u.transpose(1, 2).contiguous(), delta.to(dtype).transpose(1, 2).contiguous(), A.float(),
              B.to(dtype).transpose(1, 2).contiguous(), C.to(dtype).transpose(1, 2).contiguous(), D.float())
    return y.transpose(1, 2)  # (B, T, Di)


@functools.cache
def _mamba_kernel():
    """mamba-ssm's `selective_scan_fn`, or None when the package (an optional extra) is absent.
    Imported on first use on CUDA only: the package pulls in Triton."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:  # pragma: no cover - depends on the machine
        return None
    return selective_scan_fn  # pragma: no cover


def chunked_scan(u, delta, A, B, C, D, chunk: int = SCAN_CHUNK, compiled: bool = False) -> torch.Tensor:
    """The selective scan in PyTorch (shapes as in `selective_scan`). The Python loop runs over
    ceil(T / chunk) chunks, never over positions. The recurrence runs in fp32. compiled: each
    chunk's step runs through torch.compile, which fuses the doubling steps' elementwise passes
    over the (B, chunk, Di, N) tensors (the eager step is memory-bound); if compiling fails (no
    C++ compiler, an unsupported backend) it warns once and the eager step runs."""
    out_dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        u, delta, B, C, A, D = (t.float() for t in (u, delta, B, C, A, D))
        y = _ChunkedScan.apply(u, delta, A, B, C, chunk, compiled) + u * D  # (B, T, Di)
    return y.to(out_dtype)


_COMPILE_FAILED: list[str] = []  # why the compiled chunk step fell back to eager, once per process


@functools.cache
def _compiled_step():
    return torch.compile(_scan_chunk, dynamic=None)


def _step(compiled: bool, *args):
    """One chunk of the scan, compiled when asked and possible."""
    if compiled and not _COMPILE_FAILED:
        try:
            return _compiled_step()(*args)
        except torch._dynamo.exc.TorchDynamoException as e:  # the compiler, not the math, failed
            _COMPILE_FAILED.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            warnings.warn(f"model.compile_scan: compiling the scan failed ({_COMPILE_FAILED[0]}); "
                          "the eager scan runs instead", RuntimeWarning, stacklevel=2)
    return _scan_chunk(*args)


class _ChunkedScan(torch.autograd.Function):
    """The scan without the D skip, with the memory of a recomputing backward.

    The forward keeps only the state entering each chunk, (ceil(T / chunk), B, Di, N); the
    backward recomputes one chunk at a time, last first, with autograd, and hands the gradient of
    the state entering a chunk to the chunk before it. Why not torch.utils.checkpoint around each
    chunk: on CPU its forward, interleaving the short-lived (B, chunk, Di, N) temporaries with the
    tensors kept for backward, made glibc's heap grow with every chunk (24 GB at `tiny`, batch
    16), where the same forward under no_grad stays flat."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk, compiled):
        h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # (B, Di, N) the state entering a chunk
        entering, ys = [], []
        for t0 in range(0, u.shape[1], chunk):
            entering.append(h)
            y, h = _step(compiled, *_chunk_of(t0, chunk, u, delta, B, C), A, h)
            ys.append(y)
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(entering))
        ctx.chunk, ctx.compiled = chunk, compiled
        return torch.cat(ys, dim=1)

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, entering = ctx.saved_tensors
        chunk = ctx.chunk
        du, ddelta, dB, dC = (torch.zeros_like(t) for t in (u, delta, B, C))
        dA = torch.zeros_like(A)
        dh = None  # gradient of the state leaving the current chunk
        for i in reversed(range(entering.shape[0])):
            t0 = i * chunk
            with torch.enable_grad():
                parts = [t.detach().requires_grad_() for t in _chunk_of(t0, chunk, u, delta, B, C)]
                a_in, h_in = A.detach().requires_grad_(), entering[i].detach().requires_grad_(i > 0)
                y, h_out = _step(ctx.compiled, *parts, a_in, h_in)
                outputs, grads = [y], [dy[:, t0 : t0 + chunk]]
                if dh is not None:
                    outputs.append(h_out)
                    grads.append(dh)
                wrt = parts + [a_in] + ([h_in] if i > 0 else [])
                got = torch.autograd.grad(outputs, wrt, grads)
            for full, g in zip((du, ddelta, dB, dC), got[:4]):
                full[:, t0 : t0 + chunk] = g
            dA += got[4]
            dh = got[5] if i > 0 else None
        return du, ddelta, dA, dB, dC, None, None


def _chunk_of(t0: int, chunk: int, u, delta, B, C):
    """u, delta, B, C at positions t0 .. t0 + chunk - 1."""
    return [t[:, t0 : t0 + chunk] for t in (u, delta, B, C)]


def _scan_chunk(u, delta, B, C, A, h0):
    """One chunk: u, delta (B, Q, Di); A (Di, N); B, C (B, Q, N); h0 (B, Di, N), the state before
    the chunk. Returns y (B, Q, Di) without the D skip, and the state after the chunk (B, Di, N).

    Each position holds the affine map of its step, h -> a_t h + b_t. Hillis-Steele doubling:
    after the step with offset k, position t holds the composition of the maps of (t - 2k, t],
    since composing the earlier map (a', b') then (a_t, b_t) gives (a_t a', a_t b' + b_t).
    Positions before the chunk start compose with the identity (a = 1, b = 0), so after
    ceil(log2 Q) steps position t holds the map from the chunk's start to t."""
    a = torch.exp(delta[..., None] * A)  # (B, Q, Di, N) decay exp(delta A), in (0, 1]
    b = delta[..., None] * B[:, :, None] * u[..., None]  # (B, Q, Di, N) input delta B u
    Q, k = u.shape[1], 1
    while k < Q:
        a, b = a * _shift(a, k, 1.0), b + a * _shift(b, k, 0.0)
        k *= 2
    h = a * h0[:, None] + b  # (B, Q, Di, N) the states h_t: the maps applied to the carried state
    y = torch.einsum("bqdn,bqn->bqd", h, C)  # (B, Q, Di) C_t . h_t
    return y, h[:, -1]


def _shift(x: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """x (B, Q, Di, N) moved k positions later along Q, the first k positions set to `fill`."""
    return F.pad(x[:, :-k], (0, 0, 0, 0, k, 0), value=fill)
