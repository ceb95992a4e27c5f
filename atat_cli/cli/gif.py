"""`atat gif`: an animation of the denoising process, one frame per sampler step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from atat_cli.cli import options
from atat_cli.cli.output import log, out, print_json


def gif(
    run: options.RunArg = None,
    prompt: options.PromptOpt = "",
    sampler: options.SamplerOpt = "confidence",
    steps: options.StepsOpt = 32,
    adaptive: options.AdaptiveOpt = None,
    threshold: options.ThresholdOpt = 0.9,
    gamma: options.GammaOpt = 0.1,
    remask: options.RemaskOpt = "cap",
    eta: options.EtaOpt = 0.02,
    time_grid: options.TimeGridOpt = "linear",
    length: options.LengthOpt = None,
    block_size: options.BlockSizeOpt = None,
    cache: options.CacheOpt = "none",
    temperature: options.TemperatureOpt = 1.0,
    seed: options.SeedOpt = 0,
    color: Annotated[str, typer.Option(help="Colour of revealed tokens: confidence, or importance (ATAT runs).")] = "confidence",
    every: Annotated[Optional[int], typer.Option(help="One frame per K steps (default: 1, or more so that at most ~100 frames).")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 6.0,
    hold: Annotated[float, typer.Option(help="Seconds the final frame is held.")] = 3.0,
    width: Annotated[int, typer.Option(help="Frame width in pixels.")] = 960,
    out_path: options.OutFileOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="gif, or mp4 (needs: pip install imageio-ffmpeg).")] = "gif",
    frames_dir: Annotated[Optional[Path], typer.Option("--frames", help="Also write every frame as a PNG into this folder.")] = None,
    json_out: options.JsonOpt = False,
):
    """Animate the denoising of one sample, one frame per step; the final frame is held longer.

    The text sits in a fixed monospace layout: masked positions are blank boxes, tokens revealed at a step are outlined, revealed tokens are coloured by the model's confidence (or the ATAT estimator's importance with --color importance). The header shows step, t and NFE. The first frame has every generated position masked, the last none.

    By default: 96 tokens after the prompt (a paragraph; nothing more when the prompt has [MASK]s to fill in), written to denoise.gif (denoise.mp4 with --format mp4).

    Examples:
      atat gif --prompt "The future of AI is"
      atat gif --sampler importance --color importance --out imp.gif
      atat gif --prompt "The [MASK]*12 of the list." --steps 12 --frames frames/
      atat gif --sampler ancestral --steps 128 --every 2 --format mp4
      atat gif --sampler remdm --steps 128 --block-size 32 --cache dual
    """
    from atat_cli.device import default_device
    from atat_cli.errors import AtatError, require
    from atat_cli.runs import load_run
    from atat_cli.sampling import SamplerSettings
    from atat_cli.viz.gif import MARGIN, animate, check_writable

    if fmt not in ("gif", "mp4"):
        raise AtatError(f"unknown format '{fmt}'", "choose gif or mp4")
    if fmt == "mp4":
        from atat_cli.viz.gif import require_ffmpeg

        require_ffmpeg()  # before the sampling, not after it
    require(fps > 0, f"--fps must be positive (got {fps})")
    require(hold >= 0, f"--hold must be at least 0 seconds (got {hold})")
    require(width >= 20 * MARGIN, f"--width must be at least {20 * MARGIN} pixels (got {width})")
    require(every is None or every >= 1, f"--every must be at least 1 (got {every})")
    out_path = Path(f"denoise.{fmt}") if out_path is None else out_path
    require(out_path.suffix.lower() == f".{fmt}", f"--out {out_path} does not end in .{fmt}, the format written",
            f"name it {out_path.with_suffix('.' + fmt).name}, or pass --format {'mp4' if fmt == 'gif' else 'gif'}"
            " for the other format (PNG frames: --frames DIR)")
    check_writable(out_path)
    if frames_dir is not None and frames_dir.exists() and not frames_dir.is_dir():
        raise AtatError(f"--frames {frames_dir} exists and is not a folder")
    settings = SamplerSettings(sampler=sampler, steps=steps, adaptive=adaptive, threshold=threshold, gamma=gamma,
                               remask=remask, eta=eta,
                               grid=time_grid, temperature=temperature).validate()
    summary = animate(load_run(run, default_device()), prompt, settings, out_path, fmt=fmt, length=length, seed=seed,
                      color=color, every=every, width=width, fps=fps, hold_s=hold, frames_dir=frames_dir,
                      block_size=block_size, cache=cache)
    if json_out:
        print_json(summary)
        return
    log(f"[dim]{summary['steps']} steps, {summary['nfe']} NFE, one frame per {summary['every']} step(s)[/]")
    out.print(f"Wrote {out_path} ({summary['frames']} frames, {summary['size'][0]}x{summary['size'][1]})"
              + (f" and PNG frames in {frames_dir}/" if frames_dir is not None else ""), highlight=False)
