"""`atat sample`: generate text from a run (continuation, infilling, unconditional)."""

from __future__ import annotations

from typing import Annotated

import typer

from atat_cli.cli import options
from atat_cli.cli.output import log, out, print_json


def sample(
    run: options.RunArg = None,
    prompt: options.PromptOpt = "",
    sampler: options.SamplerOpt = None,
    steps: options.StepsOpt = None,
    adaptive: options.AdaptiveOpt = None,
    threshold: options.ThresholdOpt = 0.9,
    gamma: options.GammaOpt = 0.1,
    remask: options.RemaskOpt = "cap",
    eta: options.EtaOpt = 0.02,
    metric: Annotated[str, typer.Option(help="Uncertainty metric of the ordered samplers: entropy, margin or maxprob.")] = "entropy",
    time_grid: options.TimeGridOpt = "linear",
    length: options.LengthOpt = None,
    num_samples: options.NumSamplesOpt = 1,
    batch_size: options.BatchSizeOpt = 16,
    block_size: options.BlockSizeOpt = None,
    cache: options.CacheOpt = "none",
    temperature: options.TemperatureOpt = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: keep the most likely tokens up to this mass, in (0, 1].")] = 1.0,
    seed: options.SeedOpt = None,
    score: Annotated[bool, typer.Option("--score", help="Also report generative perplexity under --judge and unigram entropy.")] = False,
    judge: options.JudgeOpt = None,
    json_out: options.JsonOpt = False,
):
    """Generate text with a chosen sampler; prints the samples (the prompt, then what was generated).

    With --json: {"samples": [{"text", "steps", "nfe", "entropy"}...], "nfe", "seconds", "tokens_per_second", ...}.
    NFE counts network evaluations: per sample, and in total as batched calls. AR runs sample left
    to right with a KV cache.

    By default: the ancestral sampler (confidence with --adaptive), 64 steps per block, the rest of
    one context after the prompt (nothing more when the prompt has [MASK]s to fill in), and a new
    seed each time (printed with --json). --judge implies --score.

    Examples:
      atat sample --prompt "The future of AI is"
      atat sample --prompt "The [MASK]*5 sat on the mat." --sampler confidence --steps 8
      atat sample --sampler confidence --time-grid cosine --steps 32
      atat sample --sampler confidence --adaptive threshold --threshold 0.9 --num-samples 8 --json
      atat sample --sampler remdm --remask conf --eta 0.02 --steps 128
      atat sample --sampler confidence --steps 8 --block-size 32 --cache dual
      atat sample --num-samples 16 --steps 128 --score --judge runs/ar-tiny-pydocs
    """
    from atat_cli.device import default_device
    from atat_cli.errors import AtatError
    from atat_cli.progress import progress_bar
    from atat_cli.runs import load_run
    from atat_cli.sampling import SamplerSettings, generate, generation_report, load_judge

    if judge is not None:
        score = True
    if score and judge is None:
        raise AtatError("--score needs a judge", "pass --judge RUN (an AR run: atat train --method ar) or --judge gpt2")
    settings = SamplerSettings.requested(sampler, steps, adaptive, threshold=threshold, gamma=gamma, metric=metric,
                                         remask=remask, eta=eta,
                                         grid=time_grid, temperature=temperature, top_p=top_p)
    device = default_device()
    trained = load_run(run, device)
    if trained.cfg.method == "ar" and (sampler or steps is not None or adaptive):
        log("[dim]AR run: sampling left to right; --sampler, --steps and --adaptive do not apply.[/]")
    judge_model = load_judge(judge, device) if score else None

    with progress_bar("sampling", num_samples, enabled=not json_out) as advance:
        result = generate(trained, prompt, settings, length=length, num_samples=num_samples, batch_size=batch_size,
                          block_size=block_size, cache=cache, seed=seed, progress=advance)
    summary = generation_report(trained, result, settings, judge_model)
    if json_out:
        print_json(summary)
        return
    from rich.rule import Rule
    from rich.text import Text

    for i, s in enumerate(result.samples):
        out.print(Rule(f"sample {i + 1} · {s.steps} steps · {s.nfe} NFE", style="dim"))
        text = Text(s.text)
        if s.text.startswith(result.prefix):
            text.stylize("bold", 0, len(result.prefix))
        out.print(text)
    line = (f"{summary['sampler']}: {summary['nfe']} NFE, {summary['seconds']:.2f} s, "
            f"{summary['tokens_per_second']:.0f} tokens/s, unigram entropy {summary['entropy']:.2f} nats")
    if judge_model is not None:
        ppl = summary["gen_ppl"]
        line += f", gen. perplexity {'n/a' if ppl is None else f'{ppl:.2f}'} under {summary['judge']}"
    out.print(Text(line, style="dim"))

