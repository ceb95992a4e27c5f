"""Text in, text out over a trained run: prompts, semi-autoregressive blocks, AR decoding.

    from atat_cli.runs import load_run
    from atat_cli.sampling import SamplerSettings, generate
    result = generate(load_run(None, device), "The future of AI is",
                      SamplerSettings(sampler="confidence", steps=64), num_samples=4, seed=0)

Diffusion runs fill the layout block by block, left to right (`block_size` positions at a time;
by default the whole layout when it fits in one context, else half a context per block). A
block is sampled in a window of at most one context that ends at the block (or spans the first
context): positions of later blocks inside the window stay masked but visible, as in LLaDA's
semi-autoregressive decoding. `settings.steps` is per block. AR runs continue a prefix left to
right with a KV cache; they cannot infill.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import torch

from atat_cli.errors import AtatError
from atat_cli.models import token_schedule_of
from atat_cli.models.dit import DiT
from atat_cli.sampling.block_cache import CACHES, DualCacheDenoiser, PrefixCache, PrefixCacheDenoiser, block_level
from atat_cli.sampling.prompts import Layout, build_layout
from atat_cli.sampling.samplers import (
    SamplerSettings,
    StepRecord,
    check_parameterization,
    sample,
    sample_autoregressive,
)


@dataclass
class Sample:
    text: str  # the prompt's text exactly as given, with the generated tokens in place
    steps: int
    nfe: int  # denoiser evaluations this sample needed
    continuation: str  # the generated text after the prompt prefix, cut before the first EOS
    continuation_ids: list[int]  # its token ids (for the unigram entropy)
    ids: list[int]  # the whole generated row


@dataclass
class Generation:
    samples: list[Sample]
    prompt: str
    prefix: str  # literal text before the first generated token (what a judge conditions on)
    settings: SamplerSettings
    nfe: int  # batched network calls in total (what the wall time pays for)
    seconds: float
    generated_tokens: int
    seed: int
    layout: Layout | None = None
    block_size: int | None = None  # positions per semi-autoregressive block (None: AR)
    cache: str = "none"
    trajectory: list[list[StepRecord]] | None = field(default=None, repr=False)  # per batch, when recorded

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"samples": [{"text": s.text, "steps": s.steps, "nfe": s.nfe} for s in self.samples],
                "nfe": self.nfe, "seconds": self.seconds, "tokens_per_second": self.tokens_per_second,
                "generated_tokens": self.generated_tokens, "seed": self.seed, "block_size": self.block_size,
                "cache": self.cache}


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(trained, prompt: str = "", settings: SamplerSettings | None = None, *, length: int | None = None,
             num_samples: int = 1, batch_size: int = 16, block_size: int | None = None, cache: str = "none",
             seed: int | None = None, record: bool = False, progress=None) -> Generation:
    """Sample `num_samples` texts from a TrainedRun. `cache`: "none", "dual" for Fast-dLLM's
    approximate dual cache within each block, or "prefix" for a block-causal run's exact cache of
    the finished blocks (sampling/block_cache.py). `progress(done, total)`
    is called after each block of each batch, `done` counting samples (fractional within a
    batch of several blocks)."""
    from atat_cli.device import autocast, resolve_precision
    from atat_cli.diffusion import build_schedule

    settings = (settings or SamplerSettings()).validate()
    if num_samples < 1 or batch_size < 1:
        raise AtatError("num_samples and batch_size must be at least 1")
    if seed is not None and seed < 0:
        raise AtatError(f"the seed must be >= 0 (got {seed})")
    cfg, model = trained.cfg, trained.model
    device = _device_of(model)
    precision = resolve_precision(cfg.train.precision, device)
    tokenizer = trained.data.tokenizer()
    seq_len = cfg.model.seq_len
    is_ar = cfg.method == "ar"
    mask_id = trained.data.vocab_size
    layout = build_layout(prompt, tokenizer, mask_id, seq_len, length)
    if is_ar and layout.infill:
        raise AtatError("an AR run generates left to right and cannot fill [MASK] placeholders inside a text",
                        "use a diffusion run (--method mdlm or atat) for infilling")
    if settings.sampler == "importance" and trained.importance is None:
        raise AtatError("run has no importance estimator; train with --method atat",
                        "or choose --sampler uncertainty / confidence")
    parameterization = cfg.diffusion.parameterization
    if not is_ar:
        check_parameterization(parameterization, settings)
    if cache not in CACHES:
        raise AtatError(f"unknown cache '{cache}'", f"choose one of: {', '.join(CACHES)}")
    if cache != "none" and is_ar:
        raise AtatError("--cache applies to diffusion runs; an AR run always decodes with its own KV cache")
    if cache != "none" and not isinstance(getattr(model, "denoiser", model), DiT):
        raise AtatError(f"the {type(model).__name__} backbone has no cached decoding", "use --cache none")
    if block_size is not None and not 1 <= block_size <= seq_len:
        raise AtatError(f"block size must be between 1 and the context length {seq_len} (got {block_size})")
    causal_block = 0 if is_ar else cfg.model.block_size  # a block-causal denoiser (BD3-LM) decodes its own blocks
    if causal_block and cache == "dual":
        raise AtatError("a block-causal run (model.block_size) sees only clean earlier blocks: the dual cache does "
                        "not apply to it", "use --cache prefix (exact for it) or --cache none")
    if cache == "prefix" and not causal_block:
        raise AtatError("--cache prefix is exact only for a block-causal run (model.block_size); this run's DiT is "
                        "bidirectional", "use --cache dual (approximate) or --cache none")
    if causal_block and block_size not in (None, causal_block):
        raise AtatError(f"this run's denoiser is block-causal with blocks of {causal_block} positions: it samples "
                        f"in those blocks (got --block-size {block_size})", f"use --block-size {causal_block} or omit it")
    block_size = causal_block or block_size
    if block_size is None and not is_ar:  # one block when the layout fits one context, else half a context
        n = len(layout.ids)
        block_size = n - layout.first_mask if n <= seq_len else seq_len // 2
    seed = secrets.randbelow(2**31) if seed is None else seed
    generator = torch.Generator(device=device).manual_seed(seed)

    def denoiser(x, level, **cached):
        with autocast(device, precision):
            return model(x, level, **cached)

    importance = None
    if trained.importance is not None:
        def importance(x, level):
            with autocast(device, precision):
                return trained.importance(x, level).float()

    schedule = build_schedule(cfg.diffusion.schedule, cfg.diffusion.eps) if not is_ar else None
    token_schedule = token_schedule_of(model)  # a per-token or per-position schedule: ancestral sampling follows it
    rows, steps, nfes, trajectories, total_nfe = [], [], [], [], 0
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for b0 in range(0, num_samples, batch_size):
            B = min(batch_size, num_samples - b0)
            x = torch.tensor(layout.ids, dtype=torch.long, device=device).repeat(B, 1)
            if is_ar:
                out = _generate_ar(model, cfg, x, layout, trained.data.eos_id, settings, generator, record)
            else:
                def block_done(fraction, b0=b0, B=B):
                    if progress is not None:
                        progress(b0 + B * fraction, num_samples)

                out = _generate_blocks(denoiser, x, layout, seq_len, block_size, settings, generator,
                                       importance, schedule, record, block_done, token_schedule, cache,
                                       cfg.model.n_layers, parameterization, aligned=bool(causal_block))
            rows += out.tokens.tolist()
            steps += out.row_steps.tolist()
            nfes += out.row_nfe.tolist()
            total_nfe += out.nfe
            if record:
                trajectories.append(out.trajectory)
            if progress is not None:
                progress(b0 + B, num_samples)
    _sync(device)
    seconds = time.perf_counter() - start
    samples = []
    for row, n_steps, n_nfe in zip(rows, steps, nfes):
        continuation, ids = layout.continuation(row, tokenizer)
        samples.append(Sample(layout.render(row, tokenizer), n_steps, n_nfe, continuation, ids, row))
    generated = num_samples * sum(1 for i in layout.ids if i == mask_id)
    return Generation(samples, prompt, layout.prefix_text, settings, total_nfe, seconds, generated, seed, layout,
                      block_size, cache, trajectories if record else None)


def preview(trained, length: int = 64, seed: int = 0) -> str:
    """One short unconditional sample from the default sampler (one step per token): what
    `atat train` prints when it ends, so that a newcomer sees what the model learned."""
    return generate(trained, "", SamplerSettings(steps=length), length=length, seed=seed).samples[0].text


def _generate_blocks(denoiser, x, layout: Layout, seq_len, block_size, settings, generator, importance, schedule,
                     record, block_done=lambda fraction: None, token_schedule=None, cache="none", n_layers=0,
                     parameterization="subs", aligned=False):
    """Fill the layout left to right in blocks, each sampled inside a window of one context; with
    a `cache` ("dual", "prefix") each block decodes through a fresh one, over the DiT's `n_layers`;
    the logits are read as `parameterization` says (samplers.py). `aligned`: a block-causal
    denoiser's own blocks, [k b, (k + 1) b) (the first may hold prompt tokens), fed the block's
    masked fraction as the noise level, which is what it was trained with."""
    from atat_cli.sampling.samplers import SampleOutput

    B, T = x.shape
    mask_id = layout.mask_id
    first = layout.first_mask
    total_nfe, row_nfe = 0, torch.zeros(B, dtype=torch.long, device=x.device)
    row_steps = torch.zeros_like(row_nfe)
    trajectory = [] if record else None
    prefix = PrefixCache(denoiser, n_layers, block_size) if cache == "prefix" else None
    for start in range(first - first % block_size if aligned else first, T, block_size):
        block_done(max(start - first, 0) / (T - first))
        end = min(start + block_size, T)
        # the window ends at the block; aligned, at the block's full end, so the window starts on a block too
        reach = start + block_size if aligned else end
        w0 = max(reach - seq_len, 0)
        w1 = min(T, w0 + seq_len)
        s, e = start - w0, end - w0  # the block inside the window
        fill = torch.zeros(B, w1 - w0, dtype=torch.bool, device=x.device)
        fill[:, s:e] = x[:, start:end] == mask_id
        if not fill.any():
            continue
        block_denoiser = denoiser
        if cache == "dual":
            block_denoiser = DualCacheDenoiser(denoiser, s, e, n_layers)
        elif cache == "prefix":
            block_denoiser = PrefixCacheDenoiser(prefix, w0, s, e, mask_id)
        elif aligned:
            def block_denoiser(x, level, s=s, e=e):
                return denoiser(x, block_level(x, s, e, mask_id))
        out = sample(block_denoiser, x[:, w0:w1], mask_id, settings, fill=fill, generator=generator,
                     importance=importance, schedule=schedule, token_schedule=token_schedule,
                     parameterization=parameterization, record=record)
        before = x.clone() if record else None
        x[:, w0:w1] = out.tokens
        if record:  # widen the window's records to whole rows, with the NFE counted from the start
            for rec in out.trajectory:
                tokens, unmasked = before.to("cpu", copy=True), torch.zeros(B, T, dtype=torch.bool)
                confidence = torch.zeros(B, T)
                tokens[:, w0:w1], unmasked[:, w0:w1], confidence[:, w0:w1] = rec.tokens, rec.unmasked, rec.confidence
                imp = None
                if rec.importance is not None:
                    imp = torch.zeros(B, T)
                    imp[:, w0:w1] = rec.importance
                trajectory.append(StepRecord(len(trajectory), total_nfe + rec.nfe, tokens, unmasked, confidence, imp))
        total_nfe += out.nfe
        row_nfe += out.row_nfe
        row_steps += out.row_steps
    return SampleOutput(x, total_nfe, row_nfe, row_steps, trajectory)


def _generate_ar(model, cfg, x, layout: Layout, bos_id, settings, generator, record):
    from atat_cli.device import autocast, resolve_precision

    device = x.device
    precision = resolve_precision(cfg.train.precision, device)
    first = layout.first_mask
    n_new = x.shape[1] - first
    bos = torch.full((x.shape[0], 1), bos_id, dtype=torch.long, device=device)
    prefix = torch.cat([bos, x[:, :first]], dim=1)  # trained as shift_right(x0, bos = EOS)

    def model_fn(ids, caches):
        with autocast(device, precision):
            return model(ids, kv_caches=caches)

    out = sample_autoregressive(model_fn, prefix, n_new, seq_len=cfg.model.seq_len, temperature=settings.temperature,
                                top_p=settings.top_p, generator=generator, n_layers=cfg.model.n_layers, record=record)
    out.tokens = out.tokens[:, 1:]  # drop BOS: the row lines up with the layout again
    return out
