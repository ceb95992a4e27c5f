"""Likelihood evaluation that is comparable across methods.

Diffusion models (MDLM and every ATAT variant) are always scored with the true NELBO under
*uniform* masking, whatever masking they were trained with, so the number is an upper bound on
the NLL and comparable between runs. A model with a per-token schedule is also scored with the
NELBO of its own forward process (`own_*`): another upper bound on the same NLL. A block-causal
denoiser (model.block_size, BD3-LM) sees clean earlier blocks, so the same uniform masking gives
its blockwise NELBO, the bound of its own block-by-block process (objectives/base.py,
nelbo_terms). Each block gets K time samples, stratified over [eps, 1] (antithetic), from a
generator with a fixed seed. AR models report their exact NLL.

A run with another parameterisation of the reverse process (`diffusion.parameterization`) is
scored with the bound of its own reverse process, under the same uniform masking: D3PM's
discrete-time NELBO with its T steps (the K samples stratified over the steps 1..T), SEDD's
score-entropy bound (DWDSE). All are in nats per token, upper bounds on the same NLL.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from atat_cli.diffusion import build_schedule, discrete_times, time_of
from atat_cli.evaluation.block_order import block_order_nats
from atat_cli.evaluation.importance import spearman
from atat_cli.models import importance_estimator_of, token_schedule_of
from atat_cli.objectives.base import BANDS, ar_token_nll, band_rows, nelbo_terms
from atat_cli.objectives.parameterisation import d3pm_terms, sedd_terms


@torch.no_grad()
def evaluate_likelihood(model, blocks: np.ndarray, *, method: str, diffusion_cfg=None, mask_id: int = -1,
                        bos_id: int = 0, mc: int = 4, batch_size: int = 16, seed: int = 0,
                        device=torch.device("cpu"), autocast=None, progress=None, block_size: int | None = None) -> dict:
    """Sum of NLL (or NELBO) nats over the blocks, with per-block values for error bars.
    `block_size`: also the bound of decoding in blocks of that size left to right
    (evaluation/block_order.py; mc draws per block, one when it is exact at size 1).

    Returns raw totals; `summarize` turns them into per-token and per-byte numbers."""
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    # the block-order draws have their own stream, so asking for them leaves every other number as it was
    order_generator = torch.Generator(device=device).manual_seed(seed + 1)
    per_block, own_per_block, order_per_block = [], [], []
    correct = {b: 0 for b in BANDS}
    counted = {b: 0 for b in BANDS}
    schedule = build_schedule(diffusion_cfg.schedule, diffusion_cfg.eps) if method != "ar" else None
    # ATAT: predicted importance vs the measured loss of the same masked tokens
    estimator = importance_estimator_of(model) if method != "ar" else None
    token_schedule = token_schedule_of(model) if method != "ar" else None
    predicted, measured = [], []
    parameterization = diffusion_cfg.parameterization if method != "ar" else None
    for start in range(0, len(blocks), batch_size):
        x0 = torch.from_numpy(np.asarray(blocks[start : start + batch_size], dtype=np.int64)).to(device)
        if method == "ar":
            with autocast():
                nll = ar_token_nll(model, x0, bos_id)
            per_block.append(nll.sum(dim=1).double().cpu())
        else:
            block_nats = torch.zeros(x0.shape[0], dtype=torch.float64, device=device)
            own_nats = torch.zeros_like(block_nats)
            u = torch.rand(x0.shape[0], mc, generator=generator, device=device)
            for k in range(mc):  # K stratified time samples per block, one stratum each
                v = (k + u[:, k]) / mc
                t = time_of(v, diffusion_cfg.eps)
                with autocast():
                    if parameterization == "d3pm":
                        t, s = discrete_times(v, diffusion_cfg.steps)
                        out = d3pm_terms(model, x0, t, s, diffusion_cfg.steps, schedule, mask_id, generator)
                    elif parameterization == "sedd":
                        out = sedd_terms(model, x0, t, schedule, mask_id, generator)
                    else:
                        out = nelbo_terms(model, x0, t, schedule, mask_id, generator)
                block_nats += out.terms.sum(dim=1).double() / mc
                if token_schedule is not None:
                    with autocast():
                        own = nelbo_terms(model, x0, t, schedule, mask_id, generator, token_schedule=token_schedule)
                    own_nats += own.terms.sum(dim=1).double() / mc
                # (N,) at the masked positions, over the vocabulary (D3PM's rows also hold the mask's logit)
                hit = out.logits[:, :mask_id].argmax(dim=-1) == x0[out.masked]
                sequence = out.masked.nonzero(as_tuple=True)[0]  # (N,) the sequence of each
                rate = schedule.mask_rate(t)
                if estimator is not None:
                    with autocast():
                        importance = estimator(out.x_t if estimator.input == "x_t" else x0, rate)
                    predicted.append(importance.float()[out.masked].cpu())
                    measured.append(out.nll[out.masked].cpu())
                for band, rows in band_rows(rate).items():
                    in_band = rows[sequence]
                    correct[band] += int((hit & in_band).sum())
                    counted[band] += int(in_band.sum())
            per_block.append(block_nats.cpu())
            own_per_block.append(own_nats.cpu())
            if block_size is not None:
                draws = 1 if block_size == 1 else mc
                with autocast():
                    order = sum(block_order_nats(model, x0, block_size, mask_id, order_generator) for _ in range(draws))
                order_per_block.append((order / draws).cpu())
        if progress is not None:
            progress(min(start + batch_size, len(blocks)))
    model.train(was_training)
    per_block = torch.cat(per_block) if per_block else torch.zeros(0, dtype=torch.float64)
    result = {"nats": float(per_block.sum()), "per_block_nats": per_block.numpy(),
              "tokens": int(len(blocks) * blocks.shape[1]) if len(blocks) else 0}
    if token_schedule is not None:
        result["own_per_block_nats"] = torch.cat(own_per_block).numpy()
    if order_per_block:
        result["order_per_block_nats"] = torch.cat(order_per_block).numpy()
        result["block_size"] = block_size
    if method != "ar":
        result["parameterization"] = parameterization
        result["diffusion_steps"] = diffusion_cfg.steps if parameterization == "d3pm" else None
        result["mask_accuracy"] = {b: (correct[b] / counted[b] if counted[b] else None) for b in BANDS}
        result["mask_tokens"] = counted
    if predicted:
        result["importance_spearman"] = spearman(torch.cat(predicted), torch.cat(measured))
    return result


def summarize(raw: dict, bytes_per_token: float) -> dict:
    """Per-token and per-byte numbers, with the standard error across blocks."""
    tokens = raw["tokens"]
    n_bytes = tokens * bytes_per_token
    out = _per_token(raw["per_block_nats"], tokens, n_bytes)
    out["ppl"] = math.exp(out["nelbo"])
    out |= {"tokens": tokens, "bytes": int(round(n_bytes))}
    if "own_per_block_nats" in raw:  # the per-token schedule's own bound, beside the uniform one
        out |= {f"own_{k}": v for k, v in _per_token(raw["own_per_block_nats"], tokens, n_bytes).items()}
    if "order_per_block_nats" in raw:  # decoding block by block, left to right
        out |= {f"order_{k}": v for k, v in _per_token(raw["order_per_block_nats"], tokens, n_bytes).items()}
    for key in ("block_size", "parameterization", "diffusion_steps", "mask_accuracy", "importance_spearman"):
        if key in raw:
            out[key] = raw[key]
    return out


def _per_token(per_block_nats: np.ndarray, tokens: int, n_bytes: float) -> dict:
    """NELBO per token with its standard error across blocks, bits per token and per byte."""
    nelbo = float(per_block_nats.sum()) / tokens
    per_block = per_block_nats / (tokens / len(per_block_nats))
    stderr = float(per_block.std(ddof=1) / math.sqrt(len(per_block))) if len(per_block) > 1 else float("nan")
    return {"nelbo": nelbo, "nelbo_stderr": stderr, "bits_per_token": nelbo / math.log(2),
            "bits_per_byte": float(per_block_nats.sum()) / math.log(2) / n_bytes}
