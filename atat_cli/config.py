"""Typed configuration: dataclasses whose field docs are the help text.

Precedence: dataclass defaults < size preset (configs/sizes/<size>.yaml) < --config FILE <
--set key=value. Everything is validated once, here, at the edge, check after check (a later
one may rely on an earlier one); the core trusts a RunConfig it is given.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from atat_cli.errors import AtatError, require

CONFIG_DIR = Path(__file__).parent / "configs"


def doc(default, help: str):
    """A field with a default and the help text shown by `atat config show`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    backbone: str = doc("dit", "Denoiser of mdlm and atat: dit (transformer, bidirectional attention) or dimamba (bidirectional Mamba blocks, same adaLN and MLP); ar keeps its transformer.")
    n_layers: int = doc(8, "Transformer (or DiMamba) blocks.")
    d_model: int = doc(256, "Hidden width.")
    n_heads: int = doc(4, "Attention heads (d_model must divide evenly; unused by dimamba).")
    mlp_ratio: float = doc(4.0, "MLP hidden width as a multiple of d_model.")
    cond_dim: int = doc(128, "Width of the diffusion-time embedding that drives adaLN.")
    seq_len: int = doc(256, "Context length in tokens (training block length).")
    dropout: float = doc(0.0, "Dropout rate in attention output and MLP.")
    attention: str = doc("auto", "Attention kernel: auto (flash-attn if installed, else SDPA), sdpa, flash.")
    d_state: int = doc(16, "dimamba: SSM state size N per channel (the scan is done with mamba-ssm's CUDA kernel if installed, else in PyTorch).")
    d_conv: int = doc(4, "dimamba: width of the depthwise causal convolution before each scan.")
    expand: int = doc(1, "dimamba: mixer width as a multiple of d_model; 1 keeps a block's parameters near the DiT's (Mamba without an MLP uses 2).")
    compile_scan: bool = doc(False, "dimamba: run the PyTorch scan's chunk step through torch.compile (on a CPU several times faster per scan, after a one-off compile; needs a C++ compiler, else it warns and runs eager). The mamba-ssm CUDA kernel, when used, is unaffected.")
    time_input: str = doc("rate", "dit: what the time embedding is fed: rate (1000 x the masking rate 1 - alpha(t), atat's own), sigma (MDLM's total noise -log(1 - rate), unscaled, the rate capped at 0.999) or none (zero: MDLM's time_conditioning=false, the noise level is ignored). Set by `atat import mdlm`.")
    block_size: int = doc(0, "dit, --method mdlm (or atat's time proposals and token subsets): BD3-LM block diffusion: positions per block of a block-causal denoiser, which sees the noisy tokens of its own block and the clean tokens of earlier blocks (trained on two copies of each sequence in one pass, about twice MDLM's step); its NELBO is the bound of decoding block by block, left to right, and sampling follows those blocks. 0 = MDLM's bidirectional denoiser; must divide model.seq_len.")
    norm_weight: bool = doc(False, "dit: a learnable per-channel weight, no bias, on the adaLN-modulated LayerNorms (MDLM's own LayerNorm); false: none, adaLN's scale alone. Set by `atat import mdlm`.")


@dataclass
class DataConfig:
    name: str = doc("pydocs", "Corpus name (see `atat data list`); prepared on first use.")
    tokenizer: str = doc("", "Tokenizer: bytes, bpe, or a hub name (gpt2); empty = the corpus default.")
    vocab_size: int = doc(0, "Vocabulary size for a locally trained BPE; 0 = the corpus default.")
    unique_tokens: int = doc(0, "Train on only the first this many tokens of the training split, in whole blocks, repeated epoch after epoch (a data-constrained run); 0 = all of it.")


@dataclass
class DiffusionConfig:
    schedule: str = doc("loglinear", "Noise schedule: loglinear (MDLM default) or cosine.")
    eps: float = doc(1e-3, "Smallest time / largest unmasked fraction: t = (1 - eps) u + eps.")
    antithetic: bool = doc(True, "Stratified (low-discrepancy) time sampling across the batch.")
    parameterization: str = doc("subs", "How the denoiser's output defines the reverse process and its bound (--method mdlm; atat needs subs): subs (MDLM: x0 over the vocabulary without the mask, unmasked tokens carried over, continuous time), d3pm (Austin et al.'s absorbing D3PM: x0 over vocabulary and mask, discrete time with diffusion.steps steps) or sedd (Lou et al.'s score entropy: the output is a log score ratio, continuous time).")
    steps: int = doc(0, "d3pm: the number T of discrete time steps (MDLM compares T = 1000); 0 = continuous time, what subs and sedd use.")


@dataclass
class OptimConfig:
    lr: float = doc(3e-4, "Peak learning rate (AdamW).")
    betas: list = doc([0.9, 0.999], "AdamW betas.")
    weight_decay: float = doc(0.0, "AdamW decoupled weight decay.")
    warmup_steps: int = doc(50, "Linear learning-rate warm-up steps.")
    schedule: str = doc("cosine", "Learning rate after warm-up: cosine (to min_lr_ratio) or constant.")
    min_lr_ratio: float = doc(0.1, "Final learning rate as a fraction of lr (cosine).")
    grad_clip: float = doc(1.0, "Clip the gradient norm to this (0 = off): the denoiser's, and apart from it ATAT's estimator's and per-token schedule's.")
    ema: float = doc(0.9999, "EMA decay of the weights used for eval and sampling (0 = off); warmed up as min(ema, (1+step)/(10+step)).")


@dataclass
class TrainConfig:
    max_steps: int = doc(5000, "Optimiser steps to train for.")
    batch_size: int = doc(16, "Sequences per micro-batch (per process).")
    grad_accum: int = doc(1, "Micro-batches accumulated per optimiser step.")
    precision: str = doc("auto", "auto (bf16 autocast on CUDA and on CPUs with bf16 matrix units), bf16, fp32.")
    compile: bool = doc(False, "Wrap the model in torch.compile.")
    seed: int = doc(0, "Seed for initialisation, data order and diffusion noise.")
    log_every: int = doc(10, "Steps between metrics.jsonl training records.")
    eval_every: int = doc(100, "Steps between validation NELBO measurements (0 = only at the end).")
    eval_batches: int = doc(8, "Validation batches per measurement.")
    save_every: int = doc(200, "Steps between checkpoints (a checkpoint is always written at the end).")
    keep_last: int = doc(3, "Periodic checkpoints kept (best.pt is kept besides).")
    tensorboard: bool = doc(False, "Also log metrics to TensorBoard (run folder/tensorboard; needs the tracking extra).")
    wandb_project: str = doc("", "Also log metrics to this Weights & Biases project (needs the tracking extra).")


@dataclass
class ImportanceConfig:
    enabled: bool = doc(True, "Train the importance estimator (needed by importance masking, the curriculum and atat.tokens.keep < 1).")
    input: str = doc("x_t", "What the estimator sees: x_t (the noisy sequence only, so whatever it drives keeps the NELBO valid) or x0 (the clean text: the seeds' design).")
    n_layers: int = doc(1, "Estimator transformer blocks.")
    d_model: int = doc(64, "Estimator width.")
    n_heads: int = doc(2, "Estimator attention heads.")
    target: str = doc("loss", "What importance learns: loss (1 - exp(-per-token loss), the probability mass the denoiser misses), rank (the token's loss rank within its sequence, in (0, 1)) or masked (the seeds' mask indicator).")
    loss_weight: float = doc(0.1, "lambda: weight of the importance loss added to the denoising loss (the estimator's own parameters take its gradient).")


@dataclass
class MaskingConfig:
    strategy: str = doc("uniform", "Seed design only. uniform (MDLM), importance (mask important tokens more), inverse (mask easy tokens more), position (importance + learned position bias); all but uniform make masking depend on x0, which no bound allows.")
    temperature: float = doc(1.0, "Importance temperature: small = sharp, large = close to uniform masking.")


@dataclass
class CurriculumConfig:
    enabled: bool = doc(False, "Seed design only. Weight the denoising loss per token by importance and training progress (x0-dependent weights: not a bound).")
    easy_until: float = doc(0.2, "Fraction of training in the easy stage (low-importance tokens boosted).")
    hard_from: float = doc(0.8, "Fraction of training from which the hard stage (high-importance tokens boosted) holds.")
    transition: float = doc(0.05, "Width (fraction of training) of the smooth ramp between stages.")
    sharpness: float = doc(2.0, "Weights are exp(+-sharpness * importance), normalised to mean 1 per sequence.")
    plateau_patience: int = doc(0, "Advance to the next stage early after this many validations without improvement (0 = off).")


@dataclass
class TimeConfig:
    proposal: str = doc("adaptive", "Diffusion-time sampling: uniform (MDLM), adaptive (pi(t) piecewise constant over `bins`, proportional to the RMS of `signal` seen in each bin) or bell (a fixed bell over u: a normal of mean `center` and standard deviation `width` cut to [0, 1], binned; Hong et al. 2026's bell-shaped time sampling).")
    signal: str = doc("grad_bound", "What the adaptive proposal follows per bin: loss (the RMS per-sequence loss, improved DDPM's choice for L_vlb), grad (the RMS norm of the loss gradient with respect to the logits, which leaves out the loss no model can remove) or grad_bound (its lower bound from each row's (1 - p_true), within a factor 2, with no second softmax over the vocabulary).")
    bins: int = doc(20, "Bins of t for the adaptive and bell proposals.")
    center: float = doc(0.5, "bell: the mode of the proposal over u (t = (1 - eps) u + eps; the masking rate under the linear schedule).")
    width: float = doc(0.2, "bell: the standard deviation of the normal the proposal is cut from.")
    uniform_mix: float = doc(0.2, "Share of uniform in pi(t); bounds the 1/pi(t) weights by 1/uniform_mix.")
    decay: float = doc(0.98, "EMA decay of each bin's mean squared loss.")
    reweight: bool = doc(True, "Weight each sequence's loss by 1/pi(t): an unbiased estimate of the uniform NELBO. false reweights the NELBO's per-t terms instead (same minimiser, but labelled neither kind).")


@dataclass
class TokensConfig:
    keep: float = doc(1.0, "Expected fraction of masked positions that enter the loss, sampled in proportion to the x_t estimator's predicted loss and weighted by 1/probability (1 = every masked position, as MDLM).")
    floor: float = doc(0.25, "Share of uniform in the keep probabilities; bounds the 1/probability weights.")


@dataclass
class ScheduleConfig:
    kind: str = doc("uniform", "Masking schedule: uniform (every token at the rate r(t), MDLM), frequency (token id v masked with probability r(t)^w_v, w_v from training-split frequencies), learned (GenMD4: w_v >= 1 learned, starting at ~1, through the bound and a leave-one-out score-function term, each step masking the batch's first half twice) or position (position i masked with probability clip((r(t) - a_i) / window, 0, 1), a_i = (1 - window) (1 - i / (L - 1)): the reverse process reveals each block from the left); all trained and reported with the NELBO of their own forward process.")
    strength: float = doc(0.5, "frequency: w_v = (f_v / typical f)^strength clipped to [1, max_exponent]: tokens more frequent than typical stay clean longer, the rest keep the base rate.")
    max_exponent: float = doc(4.0, "Largest exponent w_v.")
    window: float = doc(0.5, "position: the share of the base rate over which each position goes from clean to masked, in (0, 1]; 1 is MDLM, towards 0 the reverse process reveals the block left to right.")


@dataclass
class ATATConfig:
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def is_seed_design(self) -> bool:
        """The seed documents' design: an estimator that scores the clean text x0 (and may drive the
        masking and the curriculum's loss weights from it)."""
        return self.importance.input == "x0"

    def kind(self) -> str:
        """Which of the two valid kinds this objective is, or `neither` (see OBJECTIVE_KINDS)."""
        x0_dependent = self.masking.strategy != "uniform" or self.curriculum.enabled
        if x0_dependent or (self.time.proposal != "uniform" and not self.time.reweight):
            return "neither"
        return "own-bound" if self.schedule.kind != "uniform" else "unbiased"

    def validate(self) -> None:
        imp, m, c, tm, tk, sc = self.importance, self.masking, self.curriculum, self.time, self.tokens, self.schedule
        require(m.strategy in MASKING_STRATEGIES, f"unknown masking strategy '{m.strategy}'",
                f"choose one of: {', '.join(MASKING_STRATEGIES)}")
        require(imp.target in IMPORTANCE_TARGETS, f"unknown importance target '{imp.target}'",
                f"choose one of: {', '.join(IMPORTANCE_TARGETS)}")
        require(imp.input in ("x_t", "x0"), f"unknown importance input '{imp.input}'", "choose x_t or x0")
        require(tm.proposal in TIME_PROPOSALS, f"unknown time proposal '{tm.proposal}'",
                f"choose one of: {', '.join(TIME_PROPOSALS)}")
        require(tm.signal in ("loss", "grad", "grad_bound"), f"unknown time signal '{tm.signal}'",
                "choose loss, grad or grad_bound")
        require(sc.kind in TOKEN_SCHEDULES, f"unknown token schedule '{sc.kind}'",
                f"choose one of: {', '.join(TOKEN_SCHEDULES)}")
        require(0 < sc.window <= 1, f"atat.schedule.window must be in (0, 1] (got {sc.window})",
                "1 is MDLM's uniform masking; smaller windows reveal each block more left to right")
        needs_importance = [name for name, on in (("masking.strategy=" + m.strategy, m.strategy != "uniform"),
                                                   ("curriculum", c.enabled),
                                                   (f"tokens.keep={tk.keep}", tk.keep < 1)) if on]
        require(imp.enabled or not needs_importance,
                f"atat.{' and atat.'.join(needs_importance)} need atat.importance.enabled=true",
                "switch the estimator on, or use masking.strategy=uniform, curriculum.enabled=false, tokens.keep=1")
        seed_parts = m.strategy != "uniform" or c.enabled
        valid_parts = tm.proposal != "uniform" or tk.keep < 1 or sc.kind != "uniform"
        require(not (seed_parts and valid_parts),
                "atat.masking.strategy and atat.curriculum (the seeds' design) do not combine with atat.time, "
                "atat.tokens or atat.schedule", "start from --config atat/seed or from a valid preset (atat config list)")
        require(not seed_parts or imp.input == "x0",
                "the seeds' importance masking and curriculum score the clean text: they need atat.importance.input=x0")
        require(not (valid_parts and imp.input == "x0"),
                "atat.time, atat.tokens and atat.schedule need an estimator that sees x_t only (atat.importance.input=x_t)")
        require(m.temperature > 0, "atat.masking.temperature must be > 0")
        require(imp.loss_weight >= 0, "atat.importance.loss_weight must be >= 0")
        require(imp.n_layers >= 1 and imp.n_heads >= 1 and imp.d_model % imp.n_heads == 0
                and (imp.d_model // imp.n_heads) % 2 == 0,
                "atat.importance: n_layers >= 1 and d_model divisible by n_heads into even head widths")
        require(0 <= c.easy_until <= c.hard_from <= 1, "atat.curriculum needs 0 <= easy_until <= hard_from <= 1")
        require(c.transition >= 0 and c.sharpness >= 0 and c.plateau_patience >= 0,
                "atat.curriculum: transition, sharpness, plateau_patience must be >= 0")
        require(tm.bins >= 1 and 0 < tm.uniform_mix <= 1 and 0 <= tm.decay < 1,
                "atat.time: bins >= 1, uniform_mix in (0, 1], decay in [0, 1)")
        require(0 <= tm.center <= 1 and tm.width > 0, "atat.time: center must be in [0, 1] and width > 0")
        require(0 < tk.keep <= 1 and 0 < tk.floor <= 1, "atat.tokens: keep and floor must be in (0, 1]")
        require(sc.max_exponent >= 1 and sc.strength >= 0, "atat.schedule: max_exponent must be >= 1 and strength >= 0")


@dataclass
class RunConfig:
    method: str = doc("mdlm", "Training method: mdlm (masked diffusion), atat (MDLM + adaptive time-aware token masking) or ar (autoregressive baseline).")
    size: str = doc("tiny", "Name of the size preset the model section came from.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    atat: ATATConfig = field(default_factory=ATATConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Every check in order (a later one may rely on an earlier one); the first failure raises."""
        m, t, o = self.model, self.train, self.optim
        require(self.method in METHODS, f"unknown method '{self.method}'", f"choose one of: {', '.join(METHODS)}")
        require(m.n_layers >= 1 and m.d_model >= 1 and m.seq_len >= 2, "model sizes must be positive (seq_len >= 2)")
        require(m.n_heads >= 1 and m.d_model % m.n_heads == 0,
                f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
        require((m.d_model // m.n_heads) % 2 == 0, "head width d_model / n_heads must be even (rotary embeddings)")
        require(m.cond_dim >= 1, f"model.cond_dim must be at least 1 (got {m.cond_dim})")
        require(m.mlp_ratio > 0, f"model.mlp_ratio must be > 0 (got {m.mlp_ratio})")
        require(m.attention in ("auto", "sdpa", "flash"), f"unknown attention '{m.attention}'",
                "choose auto, sdpa or flash")
        require(m.backbone in BACKBONES, f"unknown model.backbone '{m.backbone}'",
                f"choose one of: {', '.join(BACKBONES)}")
        require(m.backbone == "dit" or self.method != "ar",
                f"model.backbone={m.backbone} is a diffusion denoiser; the AR baseline keeps its causal transformer",
                "use --method mdlm or atat with it, or model.backbone=dit for ar")
        require(m.time_input in TIME_INPUTS, f"unknown model.time_input '{m.time_input}'",
                f"choose one of: {', '.join(TIME_INPUTS)}")
        require((m.time_input == "rate" and not m.norm_weight) or (m.backbone == "dit" and self.method != "ar"),
                "model.time_input and model.norm_weight are switches of the DiT denoiser (for imported MDLM models)",
                "keep model.time_input=rate and model.norm_weight=false with model.backbone=dimamba or --method ar")
        require(m.block_size == 0 or (m.block_size >= 1 and m.seq_len % m.block_size == 0),
                f"model.block_size={m.block_size} must divide model.seq_len={m.seq_len}",
                "use 0 (MDLM's bidirectional denoiser) or a divisor of model.seq_len, e.g. 4, 8 or 16")
        require(m.block_size == 0 or (self.method != "ar" and m.backbone == "dit"),
                "model.block_size (BD3-LM's block-causal denoiser) is for --method mdlm or atat with the DiT",
                "use --method mdlm and model.backbone=dit, or model.block_size=0")
        require(not m.compile_scan or m.backbone == "dimamba", "model.compile_scan compiles DiMamba's scan",
                "use it with model.backbone=dimamba")
        require(m.d_state >= 1 and m.d_conv >= 1 and m.expand >= 1,
                "model.d_state, model.d_conv and model.expand must be at least 1")
        require(0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)")
        require(self.diffusion.schedule in SCHEDULES, f"unknown schedule '{self.diffusion.schedule}'",
                f"choose one of: {', '.join(SCHEDULES)}")
        require(0.0 < self.diffusion.eps < 0.5, "diffusion.eps must be in (0, 0.5)")
        d = self.diffusion
        require(d.parameterization in PARAMETERIZATIONS, f"unknown diffusion.parameterization '{d.parameterization}'",
                f"choose one of: {', '.join(PARAMETERIZATIONS)}")
        require(d.parameterization != "d3pm" or d.steps >= 1,
                f"diffusion.parameterization=d3pm is discrete time: diffusion.steps must be at least 1 (got {d.steps})",
                "e.g. --set diffusion.steps=1000 (MDLM's T)")
        require(d.parameterization == "d3pm" or d.steps == 0,
                f"diffusion.steps={d.steps} sets D3PM's number of time steps; {d.parameterization} is continuous time",
                "use diffusion.steps=0, or diffusion.parameterization=d3pm")
        require(d.parameterization == "subs" or self.method == "mdlm",
                f"diffusion.parameterization={d.parameterization} is for --method mdlm; "
                + ("the AR baseline has no diffusion" if self.method == "ar" else
                   "ATAT's designs (their bounds, schedules and estimator) build on SUBS"),
                "use --method mdlm, or diffusion.parameterization=subs")
        require(m.block_size == 0 or d.parameterization == "subs",
                f"model.block_size (BD3-LM) builds on SUBS, not diffusion.parameterization={d.parameterization}",
                "use diffusion.parameterization=subs, or model.block_size=0")
        require(self.data.unique_tokens == 0 or self.data.unique_tokens >= m.seq_len,
                f"data.unique_tokens={self.data.unique_tokens} is less than one block of model.seq_len={m.seq_len} tokens",
                "use 0 (the whole training split) or at least model.seq_len")
        require(t.max_steps >= 1, f"max_steps must be at least 1 (got {t.max_steps})", "pass --max-steps N with N >= 1")
        require(t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be at least 1")
        require(t.precision in ("auto", "bf16", "fp32"), f"unknown precision '{t.precision}'",
                "choose auto, bf16 or fp32")
        require(t.seed >= 0, f"train.seed must be >= 0 (got {t.seed})")
        require(t.keep_last >= 1, "train.keep_last must be at least 1")
        require(t.log_every >= 1 and t.save_every >= 1 and t.eval_every >= 0 and t.eval_batches >= 1,
                "train.log_every, save_every, eval_batches must be >= 1 and eval_every >= 0")
        require(o.lr > 0 and o.warmup_steps >= 0 and 0 <= o.min_lr_ratio <= 1,
                "optim.lr must be > 0, warmup_steps >= 0, min_lr_ratio in [0, 1]")
        require(o.schedule in ("cosine", "constant"), f"unknown lr schedule '{o.schedule}'", "choose cosine or constant")
        require(0.0 <= o.ema < 1.0, "optim.ema must be in [0, 1)")
        require(len(o.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas),
                "optim.betas must be two numbers in [0, 1)")
        require(o.weight_decay >= 0 and o.grad_clip >= 0, "optim.weight_decay and optim.grad_clip must be >= 0")
        if self.method == "atat":
            self.atat.validate()
            require(m.block_size == 0 or (self.atat.schedule.kind == "uniform" and not self.atat.is_seed_design()),
                    "model.block_size (BD3-LM) takes ATAT's time proposals and token subsets, which estimate its "
                    "blockwise NELBO; not a per-token or per-position schedule, nor the seeds' design",
                    "use atat.schedule.kind=uniform with a valid preset (e.g. atat/time_grad_bound), or model.block_size=0")
            require(self.atat.schedule.kind != "learned" or t.batch_size % 2 == 0,
                    f"atat.schedule.kind=learned masks each sequence of half the batch twice: train.batch_size "
                    f"must be even (got {t.batch_size})", f"use --set train.batch_size={t.batch_size + 1}")
        return self


METHODS = ("mdlm", "atat", "ar")
BACKBONES = ("dit", "dimamba")
TIME_INPUTS = ("rate", "sigma", "none")  # what the DiT's time embedding embeds (models/layers.py, TimeEmbedding)
MASKING_STRATEGIES = ("uniform", "importance", "inverse", "position")
IMPORTANCE_TARGETS = ("rank", "loss", "masked")
SCHEDULES = ("loglinear", "cosine")
PARAMETERIZATIONS = ("subs", "d3pm", "sedd")  # diffusion.parameterization: diffusion/subs.py, d3pm.py, sedd.py
TOKEN_SCHEDULES = ("uniform", "frequency", "learned", "position")
TIME_PROPOSALS = ("uniform", "adaptive", "bell")
# What an ATAT objective is, by ATATConfig.kind(): shown by `atat config show` and `atat eval`.
OBJECTIVE_KINDS = {
    "unbiased": "an unbiased estimate of the uniform-masking NELBO (the same optimum as MDLM)",
    "own-bound": "a valid NELBO of its own forward process (per-token or per-position schedule), reported beside the uniform one",
    "neither": "neither a bound nor an unbiased estimate of one (x0-dependent masking or weights, or t reweighted)",
}


# --- loading -------------------------------------------------------------------------------


def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _coerce(value, typ, key: str):
    """Check a YAML value against a dataclass field type; ints are accepted for floats."""
    if typ is float and not isinstance(value, bool):
        if isinstance(value, str):  # YAML reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise AtatError(f"config key '{key}' must be a finite number, got {value!r}")
            return float(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ in (int, float, str, list) and isinstance(value, typ) and not isinstance(value, bool):
        return value
    raise AtatError(f"config key '{key}' expects {typ.__name__}, got {value!r}")


def _merge(obj, data: dict, prefix: str = "") -> None:
    """Apply a nested dict onto a dataclass instance in place; unknown keys are errors."""
    if not isinstance(data, dict):
        raise AtatError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    types = _field_types(type(obj))
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in types:
            known = ", ".join(f"{prefix}{k}" for k in types)
            raise AtatError(f"unknown config key '{full}'", f"known keys here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, types[key], full))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise AtatError(f"config file not found: {path}", "see `atat config list` for the shipped presets")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise AtatError(f"cannot parse config file {path}: {e}".splitlines()[0]) from e
    if not isinstance(data, dict):
        raise AtatError(f"config file {path} must hold a mapping of sections")
    return data


def parse_override(item: str) -> dict:
    """`train.lr=1e-3` -> {"train": {"lr": 0.001}} (the value is parsed as YAML)."""
    if "=" not in item:
        raise AtatError(f"--set expects key=value, got '{item}'", "example: --set train.batch_size=8")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise AtatError(f"--set {item}: the value is not valid YAML ({str(e).splitlines()[0]})",
                        f"quote it: --set {key}='\"{raw}\"'") from None
    nested: dict = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def resolve_config_file(name: str | Path) -> Path:
    """A path, or the name of a shipped preset (`atat/no_curriculum` -> configs/atat/no_curriculum.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{str(name).removesuffix('.yaml')}.yaml"
    return shipped if shipped.is_file() else path


def shipped_preset(name: str) -> Path:
    """The YAML file of a shipped preset (`sizes/tiny`, `atat/seed`, or a size name alone); only
    files inside configs/, so `../` names reach nothing else."""
    stem = name.removesuffix(".yaml")
    for candidate in (CONFIG_DIR / f"{stem}.yaml", CONFIG_DIR / "sizes" / f"{stem}.yaml"):
        resolved = candidate.resolve()
        if resolved.is_file() and resolved.is_relative_to(CONFIG_DIR.resolve()):
            return resolved
    raise AtatError(f"unknown preset '{name}'", "see `atat config list`")


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def preset_path(kind: str, name: str) -> Path:
    path = CONFIG_DIR / kind / f"{name}.yaml"
    if not path.is_file():
        raise AtatError(f"unknown {kind[:-1]} '{name}'", f"choose one of: {', '.join(preset_names(kind))}")
    return path


def load_config(
    size: str | None = None,
    method: str | None = None,
    config_file: Path | None = None,
    overrides: typing.Sequence[str] = (),
) -> RunConfig:
    """Compose defaults < size preset < config file < overrides, then validate."""
    cfg = RunConfig()
    file_data = _read_yaml(resolve_config_file(config_file)) if config_file else {}
    override_data = [parse_override(item) for item in overrides]
    # The size and method named last win, so that `--set method=ar` picks the AR preset too.
    size = size or file_data.get("size") or cfg.size
    method = method or file_data.get("method") or cfg.method
    for o in override_data:
        size = o.get("size", size)
        method = o.get("method", method)
    cfg.size = size
    _merge(cfg, _read_yaml(preset_path("sizes", size)))
    if method not in METHODS:
        raise AtatError(f"unknown method '{method}'", f"choose one of: {', '.join(METHODS)}")
    cfg.method = method
    _merge(cfg, file_data)
    for o in override_data:
        _merge(cfg, o)
    return cfg.validate()


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild the config saved in a run folder (strict: a stale key is an error). A run saved
    before the valid ATAT designs existed was the seeds' design with uniform times: keys it lacks
    take those values, not today's defaults."""
    cfg = RunConfig()
    atat = data.get("atat")
    if isinstance(atat, dict) and "time" not in atat:
        _merge(cfg, {"atat": {"importance": {"input": "x0"}, "time": {"proposal": "uniform"}}})
    _merge(cfg, data)
    return cfg.validate()


def describe(obj=None, prefix: str = "") -> list[tuple[str, typing.Any, str]]:
    """(key, value, help) for every leaf field: the text of `atat config show`."""
    obj = obj if obj is not None else RunConfig()
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows
