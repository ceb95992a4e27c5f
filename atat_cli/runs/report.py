"""Evaluate a run folder on a split: the numbers `atat eval` prints."""

from __future__ import annotations

from atat_cli.data import ensure_prepared
from atat_cli.device import autocast, default_device, resolve_precision
from atat_cli.errors import AtatError
from atat_cli.evaluation.likelihood import evaluate_likelihood, summarize
from atat_cli.progress import progress_bar
from atat_cli.runs.loading import load_run


def evaluate_run(run=None, *, data: str | None = None, split: str = "valid", mc: int = 4, batch_size: int = 16,
                 max_blocks: int = 0, seed: int = 0, device=None, progress: bool = False,
                 block_size: int | None = None) -> dict:

    if split not in ("valid", "test"):
        raise AtatError(f"unknown split '{split}'", "choose valid or test")
    if mc < 1 or batch_size < 1 or max_blocks < 0:
        raise AtatError("--mc and --batch-size must be at least 1, --max-blocks at least 0")
    if seed < 0:
        raise AtatError(f"--seed must be >= 0 (got {seed})")
    device = device or default_device()
    trained = load_run(run, device)
    cfg, corpus = trained.cfg, trained.data
    if data is not None and data != corpus.name:
        name = trained.data.tokenizer_name
        corpus = ensure_prepared(data, tokenizer=name, progress=progress)
        if corpus.tokenizer_fingerprint != trained.data.tokenizer_fingerprint:
            hint = (f"re-prepare it: atat data fetch {data} --tokenizer {name} --force" if name != "bpe" else
                    "a BPE trained on one corpus encodes another differently; compare runs across corpora "
                    "with --tokenizer bytes or a hub tokenizer")
            raise AtatError(f"corpus '{data}' was prepared with another tokenizer than the run's", hint)
    if block_size is not None:
        if cfg.method == "ar":
            raise AtatError("--block-size scores a diffusion run decoded block by block; an AR run's NLL is "
                            "already exact left to right")
        if cfg.diffusion.parameterization != "subs":
            raise AtatError(f"--block-size needs a SUBS (MDLM) denoiser; this run is {cfg.diffusion.parameterization}")
        if cfg.model.block_size:
            raise AtatError(f"--block-size scores a bidirectional denoiser decoded block by block; this run's is "
                            f"block-causal (model.block_size={cfg.model.block_size}), so its NELBO is already that "
                            "bound for its own blocks")
        if not 1 <= block_size <= cfg.model.seq_len:
            raise AtatError(f"--block-size must be between 1 and the context length {cfg.model.seq_len} (got {block_size})")
    blocks = corpus.blocks(split, cfg.model.seq_len)
    if max_blocks:
        blocks = blocks[:max_blocks]
    if len(blocks) == 0:
        raise AtatError(f"split '{split}' of '{corpus.name}' has fewer tokens than one block of {cfg.model.seq_len}")
    precision = resolve_precision(cfg.train.precision, device)
    with progress_bar("eval", len(blocks), enabled=progress) as advance:
        raw = evaluate_likelihood(trained.model, blocks, method=cfg.method, diffusion_cfg=cfg.diffusion,
                                  mask_id=corpus.vocab_size, bos_id=corpus.eos_id, mc=mc, batch_size=batch_size,
                                  seed=seed, device=device, autocast=lambda: autocast(device, precision),
                                  progress=advance, block_size=block_size)
    result = {"run": str(trained.checkpoint.parent), "checkpoint": str(trained.checkpoint), "method": cfg.method,
              "step": trained.step, "data": corpus.name, "split": split,
              "mc": mc if cfg.method != "ar" else None, "seed": seed,
              # what the bound is: ATAT's kind; a block-causal denoiser's NELBO is the bound of its own process
              "objective": cfg.atat.kind() if cfg.method == "atat" else "own-bound" if cfg.model.block_size else None,
              "model_block_size": cfg.model.block_size or None}
    result.update(summarize(raw, corpus.bytes_per_token(split)))
    floor = corpus.meta.get("entropy_floor")  # known for a synthetic source: how far off the best
    if floor is not None:
        result["floor_bits_per_byte"] = floor["bits_per_byte"]
        result["gap_to_floor_bits_per_byte"] = result["bits_per_byte"] - floor["bits_per_byte"]
    return result
