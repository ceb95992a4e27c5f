"""Arguments and options that several commands take, each declared once.

An alias carries the option's names and help; the default stays in each command's signature
(`steps: options.StepsOpt = 32`), so a command that defaults differently shows it where it is
declared. Where a default is not a plain value (a folder named after the run, the rest of a
context), the command's description says what it is. Only typer, typing and pathlib here, so
that `atat --help` stays instant.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

# What every command reads or writes.
RunArg = Annotated[Optional[str], typer.Argument(help="Run folder or checkpoint (default: the newest run).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object instead of text; no progress bars.")]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out", help="Folder to write into (default: named in the description).")]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", help="File to write (default: named in the description).")]

# What a configuration is composed of.
SizeOpt = Annotated[Optional[str], typer.Option(help="Model size preset: test, tiny, small, medium (see `atat config list`).")]
MethodOpt = Annotated[Optional[str], typer.Option(
    help="mdlm (masked diffusion), atat (MDLM + adaptive time-aware masking) or ar (autoregressive baseline).")]
DataOpt = Annotated[Optional[str], typer.Option(help="Corpus name (see `atat data list`), prepared on first use.")]
OverridesOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a config key, e.g. --set optim.lr=1e-3 (repeatable).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed: the same seed gives the same result.")]

# Evaluation and generation sizes.
McOpt = Annotated[int, typer.Option(help="Time samples per block in the diffusion NELBO estimate.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Sequences per forward pass.")]
NumSamplesOpt = Annotated[int, typer.Option(help="Number of samples to generate.")]
LengthOpt = Annotated[Optional[int], typer.Option(
    help="Tokens to generate after the prompt, if any (default: named in the description).")]
JudgeOpt = Annotated[Optional[str], typer.Option(
    help="Judge of generative perplexity: an AR run folder (atat train --method ar) or a Hugging Face causal LM name.")]

# The sampler: the fields of SamplerSettings, as `atat sample` and `atat gif` take them.
PromptOpt = Annotated[str, typer.Option(
    help="Text to continue; [MASK] or [MASK]*N inside it marks tokens to fill in; empty = unconditional.")]
SamplerOpt = Annotated[Optional[str], typer.Option(
    help="ancestral (MDLM), remdm (ancestral with remasking), confidence, uncertainty or importance (ATAT runs).")]
StepsOpt = Annotated[Optional[int], typer.Option(help="Denoising steps (per block).")]
AdaptiveOpt = Annotated[Optional[str], typer.Option(
    help="Adaptive steps instead of --steps: threshold (Fast-dLLM) or entropy-bound (EB-sampler).")]
ThresholdOpt = Annotated[float, typer.Option(
    help="--adaptive threshold: reveal every position whose top probability is at least this, in (0, 1].")]
GammaOpt = Annotated[float, typer.Option(help="--adaptive entropy-bound: bound (nats) on summed entropy minus the largest one.")]
RemaskOpt = Annotated[str, typer.Option(
    help="--sampler remdm: cap (sigma_t = min(eta, sigma_max)), rescale (eta x sigma_max) or conf (cap's budget, "
         "least confident tokens first).")]
EtaOpt = Annotated[float, typer.Option(help="--sampler remdm: the remasking strength eta, in [0, 1]; 0 is ancestral.")]
BlockSizeOpt = Annotated[Optional[int], typer.Option(
    help="Semi-autoregressive block length (default: one block if it fits the context, else half a context; "
         "a block-causal run's own block size).")]
CacheOpt = Annotated[str, typer.Option(
    help="none; dual: within a block, recompute only the block and reuse the rest's keys/values from the "
         "block's first step (Fast-dLLM's dual cache; approximate), pays with --block-size smaller than the text; "
         "prefix: a block-causal run (model.block_size) computes the finished blocks once per block (exact).")]
# "schedule" already names the noise and LR schedules, hence --time-grid; --schedule, its former name, still works.
TimeGridOpt = Annotated[str, typer.Option(
    "--time-grid", "--schedule",
    help="Time grid, i.e. how many tokens each step reveals: linear or cosine (MD4/MaskGIT).")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")]
