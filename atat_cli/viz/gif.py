"""Frames of the denoising process: one picture of the text per sampler step, as numpy arrays.

    layout = TokenLayout.build(pieces, targets)
    frames = render_frames(layout, start_ids, records, mask_id=mask_id, ...)
    write_animation(frames, "denoise.gif", fps=8, hold_s=2.5)

The text is laid out once, from the final tokens, on a monospace character grid; every frame
draws the same cells, so a token never moves while the picture animates (otherwise each
reveal would reflow the text and the eye could not follow it). A position still masked is a
blank grey box of the width its final token will have; a revealed position shows its token on a
background coloured by the value it was revealed with (the model's confidence in the drawn
token, or the estimator's importance); tokens revealed since the previous frame get a bright
outline. Prompt tokens are plain grey text. A header gives the step, t (fixed-step samplers)
or the fraction still masked, and the NFE so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atat_cli.errors import AtatError

WIDTH = 960  # pixels: readable on a README page without scaling
MARGIN = 24
FONT_SIZE = 16
LINE_GAP = 10  # pixels between text rows, so outlines of neighbouring rows do not touch
HEADER_H = 64
FOOTER_H = 58

BACKGROUND = (255, 255, 255)
BLANK_FILL = (228, 230, 234)  # masked: a neutral box
BLANK_LINE = (160, 164, 172)  # its underscore
PROMPT_TEXT = (110, 110, 110)
HIGHLIGHT = (255, 45, 85)  # outline of the tokens revealed at this step
HEADER_TEXT = (30, 30, 30)
PROGRESS_FILL = (90, 90, 90)

COLORMAPS = {"confidence": "viridis", "importance": "magma"}
COLOR_LABELS = {"confidence": "confidence: probability of the drawn token (log scale)",
                "importance": "importance (ATAT estimator) when revealed"}
# Confidence spans orders of magnitude (a young model gives its draws 0.1% .. 90%), so it is
# coloured on a log scale with fixed ends, comparable between animations.
CONFIDENCE_FLOOR = 1e-3
NEWLINE = "\u21b5"  # drawn where a token holds a line break, which then breaks the row


@dataclass
class Cell:
    """One drawn piece of a token: `width` characters at (row, col) of the character grid."""

    row: int
    col: int
    text: str

    @property
    def width(self) -> int:
        return max(1, len(self.text))


def _visible(piece: str) -> str:
    """A token's text with every non-printable character but the newline (control characters,
    separators such as U+001C or U+0085, which the font's text layout refuses to draw) shown as
    U+FFFD: a byte-level model can sample any of them."""
    return "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in piece)


@dataclass
class TokenLayout:
    """Where each token of the row sits on the character grid (a token may wrap into pieces)."""

    cells: list[list[Cell]]  # per position
    targets: np.ndarray  # bool (T,): positions the sampler fills (the rest is prompt)
    cols: int
    rows: int

    @classmethod
    def build(cls, pieces: list[str], targets, cols: int) -> TokenLayout:
        """Wrap the final token texts into rows of `cols` characters, at token boundaries."""
        targets = np.asarray(targets, dtype=bool)
        cells: list[list[Cell]] = []
        row, col = 0, 0
        for piece in pieces:
            piece = _visible(piece.replace("\t", "    ").replace("\r", ""))
            token_cells = []
            segments = piece.split("\n")
            for k, segment in enumerate(segments):
                breaks = k < len(segments) - 1
                text = segment + (NEWLINE if breaks else "")
                if not text and k > 0:
                    continue
                if col > 0 and col + max(1, len(text)) > cols:  # wrap before a token that does not fit
                    row, col = row + 1, 0
                    if text.startswith(" ") and len(text) > 1:
                        text = text[1:]  # a wrapped word does not start its row with a space
                while len(text) > cols:  # longer than a row: cut it
                    token_cells.append(Cell(row, col, text[: cols - col]))
                    text = text[cols - col :]
                    row, col = row + 1, 0
                token_cells.append(Cell(row, col, text))
                col += max(1, len(text))
                if breaks:
                    row, col = row + 1, 0
            cells.append(token_cells)
        rows = max((c.row for cs in cells for c in cs), default=0) + 1
        return cls(cells, targets, cols, rows)


def _font(size: int, bold: bool = False):
    """DejaVu Sans Mono, which ships with matplotlib (so no font download is ever needed)."""
    from matplotlib import font_manager
    from PIL import ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans Mono",
                                                             weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size)


class FrameRenderer:
    """Draws frames of one layout; all frames have the same size."""

    def __init__(self, layout: TokenLayout, color: str = "confidence", width: int = WIDTH, font_size: int = FONT_SIZE,
                 value_range: tuple[float, float] = (0.0, 1.0)):
        from matplotlib import colormaps

        if color not in COLORMAPS:
            raise AtatError(f"unknown colour '{color}'", f"choose one of: {', '.join(COLORMAPS)}")
        self.layout, self.color, self.width = layout, color, width
        self.font = _font(font_size)
        self.bold = _font(font_size, bold=True)
        self.small = _font(12)
        self.char_w = self.font.getlength("M")
        self.line_h = font_size + LINE_GAP
        self.cmap = colormaps[COLORMAPS[color]]
        # importance: a linear scale over the range present (an estimator's scores often sit in a
        # narrow band, which a fixed 0..1 scale would paint one colour); the colour bar says which
        lo, hi = value_range
        self.value_range = (lo, hi if hi - lo > 1e-3 else lo + 1e-3)
        self.height = HEADER_H + layout.rows * self.line_h + 12 + FOOTER_H

    @staticmethod
    def columns(width: int = WIDTH, font_size: int = FONT_SIZE) -> int:
        """How many characters fit in a row of a frame `width` pixels wide."""
        return int((width - 2 * MARGIN) // _font(font_size).getlength("M"))

    def box(self, cell: Cell) -> tuple[int, int, int, int]:
        """Pixel rectangle (x0, y0, x1, y1) of a cell, the same in every frame."""
        x0 = MARGIN + round(cell.col * self.char_w)
        y0 = HEADER_H + cell.row * self.line_h
        return x0, y0, x0 + round(cell.width * self.char_w), y0 + self.line_h - 4

    def position(self, value: float) -> float:
        """Where a value sits on the colour bar, 0 .. 1."""
        if self.color == "confidence":
            floor = math.log10(CONFIDENCE_FLOOR)
            return float(np.clip((math.log10(max(float(value), CONFIDENCE_FLOOR)) - floor) / -floor, 0.0, 1.0))
        lo, hi = self.value_range
        return float(np.clip((float(value) - lo) / (hi - lo), 0.0, 1.0))

    def ticks(self) -> list[tuple[float, str]]:
        if self.color == "confidence":
            return [(self.position(v), label) for v, label in ((1e-3, "0.001"), (1e-2, "0.01"), (0.1, "0.1"), (1.0, "1"))]
        lo, hi = self.value_range
        digits = max(2, 1 - math.floor(math.log10(hi - lo)))  # enough to tell the ticks apart
        return [(f, f"{lo + f * (hi - lo):.{digits}f}") for f in (0.0, 0.5, 1.0)]

    def rgb(self, value: float) -> tuple[int, int, int]:
        return self._colour(self.position(value))

    def _colour(self, position: float) -> tuple[int, int, int]:
        # the colour map's darkest tenth is skipped: black text would vanish on it
        r, g, b, _ = self.cmap(0.1 + 0.9 * position)
        return round(255 * r), round(255 * g), round(255 * b)

    def render(self, ids, masked, new, values, header: str, progress: float) -> np.ndarray:
        """One frame. ids/masked/new/values are (T,): the row, still masked, revealed since the
        previous frame, and the colour value each revealed token was revealed with."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        draw.text((MARGIN, 12), header, font=self.bold, fill=HEADER_TEXT)
        # a thin bar: how much of the text is revealed
        bar_y = HEADER_H - 20
        draw.rectangle((MARGIN, bar_y, self.width - MARGIN, bar_y + 5), fill=BLANK_FILL)
        draw.rectangle((MARGIN, bar_y, MARGIN + round(progress * (self.width - 2 * MARGIN)), bar_y + 5),
                       fill=PROGRESS_FILL)
        for i, token_cells in enumerate(self.layout.cells):
            for cell in token_cells:
                x0, y0, x1, y1 = self.box(cell)
                if not self.layout.targets[i]:
                    draw.text((x0, y0 + 2), cell.text, font=self.font, fill=PROMPT_TEXT)
                elif masked[i]:
                    # 1 px of white between neighbouring boxes, so masked tokens can be counted
                    draw.rectangle((x0 + 1, y0, x1 - 2, y1), fill=BLANK_FILL)
                    draw.line((x0 + 2, y1 - 2, x1 - 3, y1 - 2), fill=BLANK_LINE, width=2)
                else:
                    fill = self.rgb(values[i])
                    draw.rectangle((x0, y0, x1 - 1, y1), fill=fill)
                    draw.text((x0, y0 + 2), cell.text, font=self.font, fill=_text_colour(fill))
                    if new[i]:
                        draw.rectangle((x0 - 1, y0 - 2, x1 + 1, y1 + 2), outline=HIGHLIGHT, width=3)
        self._footer(draw)
        return np.asarray(image)

    def _footer(self, draw) -> None:
        y = self.height - FOOTER_H + 14
        x = MARGIN + 16  # room for the first tick label, centred under the bar's start
        # colour bar of the revealed tokens' value, 0 .. 1
        bar_w = 220
        for k in range(bar_w):
            draw.line((x + k, y, x + k, y + 12), fill=self._colour(k / (bar_w - 1)))
        for frac, label in self.ticks():
            lx = x + frac * (bar_w - 1)
            draw.line((lx, y + 12, lx, y + 16), fill=HEADER_TEXT)
            draw.text((lx - self.small.getlength(label) / 2, y + 18), label, font=self.small, fill=HEADER_TEXT)
        draw.text((x + bar_w + 12, y - 1), COLOR_LABELS[self.color], font=self.small, fill=HEADER_TEXT)
        # legend: masked box, highlight, prompt
        lx = self.width - MARGIN - 430
        draw.rectangle((lx, y + 20, lx + 28, y + 34), fill=BLANK_FILL)
        draw.line((lx + 2, y + 32, lx + 26, y + 32), fill=BLANK_LINE, width=2)
        draw.text((lx + 34, y + 20), "masked", font=self.small, fill=HEADER_TEXT)
        lx += 100
        draw.rectangle((lx, y + 20, lx + 28, y + 34), fill=self._colour(0.7), outline=HIGHLIGHT, width=3)
        draw.text((lx + 34, y + 20), "revealed at this step", font=self.small, fill=HEADER_TEXT)
        lx += 200
        draw.text((lx, y + 19), "prompt", font=self.bold, fill=PROMPT_TEXT)


def _text_colour(fill) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance)."""
    r, g, b = fill
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def grid_time(step: int, steps: int, grid: str) -> float:
    """t after `step` (0-based) of a fixed time grid of `steps` steps, as the samplers use it."""
    u = (step + 1) / steps
    return 1.0 - u if grid == "linear" else math.cos(0.5 * math.pi * u)


def frame_steps(n_records: int, every: int) -> list[int]:
    """Indices of the records that get a frame: every k-th, and always the last."""
    if every < 1:
        raise AtatError(f"--every must be at least 1 (got {every})")
    picked = list(range(every - 1, n_records, every))
    if n_records and (not picked or picked[-1] != n_records - 1):
        picked.append(n_records - 1)
    return picked


def render_frames(layout: TokenLayout, start_ids, records, *, mask_id: int, color: str = "confidence",
                  every: int = 1, steps: int | None = None, grid: str = "linear", title: str = "",
                  row: int = 0, width: int = WIDTH) -> list[np.ndarray]:
    """Frames of one row of a recorded trajectory: the start (every target masked), then one frame
    per `every` steps (StepRecords of the sampler), the last one with nothing masked.

    `steps`/`grid` give t for a fixed-step sampler; None (adaptive steps) shows the fraction masked."""
    if color == "importance" and any(r.importance is None for r in records):
        raise AtatError("--color importance needs importance from an ATAT run's estimator, and this trajectory has none",
                        "train with --method atat, or use --color confidence")
    value_range = (0.0, 1.0)
    if color == "importance":
        revealed_values = [r.importance[row][r.unmasked[row]].float() for r in records if r.unmasked[row].any()]
        if revealed_values:
            every_value = np.concatenate([np.asarray(v) for v in revealed_values])
            value_range = (float(every_value.min()), float(every_value.max()))
    renderer = FrameRenderer(layout, color, width, value_range=value_range)
    targets = layout.targets
    ids = np.asarray(start_ids).copy()
    n_targets = int(targets.sum())
    values = np.zeros(len(ids))  # the colour value of each revealed token, from its step
    new = np.zeros(len(ids), dtype=bool)

    def frame(header: str) -> np.ndarray:
        masked = ids == mask_id
        remaining = int((masked & targets).sum())
        progress = 1.0 - remaining / max(1, n_targets)
        return renderer.render(ids, masked, new, values, f"{title}{header}   masked {remaining}/{n_targets}",
                               progress)

    frames = [frame("start   t = 1.00   NFE 0" if steps else "start   NFE 0")]
    picked = set(frame_steps(len(records), every))
    for k, rec in enumerate(records):
        revealed = rec.unmasked[row].numpy().astype(bool)
        value = rec.confidence[row] if color == "confidence" else rec.importance[row]
        values[revealed] = value.float().numpy()[revealed]
        new |= revealed
        if k not in picked:
            continue
        ids = rec.tokens[row].numpy().copy()
        if steps:
            when = f"step {k + 1}/{steps}   t = {grid_time(k, steps, grid):.2f}"
        else:
            when = f"step {k + 1}/{len(records)}"
        frames.append(frame(f"{when}   NFE {rec.nfe}"))
        new[:] = False
    return frames


def write_animation(frames: list[np.ndarray], path: Path, fps: float = 8.0, hold_s: float = 2.5,
                    fmt: str = "gif") -> Path:
    """A GIF (per-frame durations: the last frame held `hold_s`) or an MP4 (the last frame repeated)."""
    import imageio.v3 as iio

    if fps <= 0 or not math.isfinite(fps):
        raise AtatError(f"fps must be a positive number (got {fps})")
    if not frames:
        raise AtatError("no frames to write: the sampler recorded no step")
    path = Path(path)
    if fmt == "gif":
        step_ms = 1000.0 / fps
        durations = [step_ms] * (len(frames) - 1) + [max(step_ms, 1000.0 * hold_s)]
        iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations, loop=0)
    elif fmt == "mp4":
        require_ffmpeg()
        held = frames + [frames[-1]] * max(0, round(hold_s * fps) - 1)
        # H.264 wants even sides; pad with the background colour rather than scale the text
        h, w = held[0].shape[:2]
        pad = ((0, h % 2), (0, w % 2), (0, 0))
        iio.imwrite(path, np.stack([np.pad(f, pad, constant_values=255) for f in held]), extension=".mp4",
                    plugin="FFMPEG", fps=fps)
    else:
        raise AtatError(f"unknown format '{fmt}'", "choose gif or mp4")
    return path


def require_ffmpeg() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401 - imageio's ffmpeg plugin needs it
    except ImportError as e:
        raise AtatError("--format mp4 needs imageio's ffmpeg backend, which is not installed",
                        "pip install imageio-ffmpeg (or use the default --format gif)") from e


def check_writable(path: Path) -> Path:
    """Fail early, before any sampling or plotting, when `path` cannot be written: its folder is
    missing or not a folder, the path is a folder, or a test file cannot be created there."""
    import tempfile

    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise AtatError(f"output path {path} is a folder", "give a file name, e.g. --out pictures/out.png")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise AtatError(f"cannot write {path}: {folder} {what}", f"create it first (mkdir -p {folder}) or choose another --out")
    try:  # os.access is not enough: it says yes to root on read-only mounts
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".atat-write-test-"):
            pass
    except OSError as e:
        raise AtatError(f"cannot write {path}: {e.strerror or e}", "choose another --out") from e
    return path


def write_pngs(frames: list[np.ndarray], folder: Path) -> list[Path]:
    """frame_000.png, frame_001.png, ... in `folder` (created)."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(frames) - 1)))
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / f"frame_{i:0{digits}d}.png")
        iio.imwrite(paths[-1], frame)
    return paths


def token_pieces(ids, tokenizer, eos_id: int) -> list[str]:
    """Each token's own text (decoded alone), EOS shown as <eos>."""
    return ["<eos>" if int(i) == eos_id else tokenizer.decode([int(i)]) for i in ids]


def denoising_frames(trained, prompt: str, settings, *, length: int | None = None, seed: int | None = 0,
                     color: str = "confidence", every: int | None = None, width: int = WIDTH,
                     title: str = "", block_size: int | None = None,
                     cache: str = "none") -> tuple[list[np.ndarray], dict]:
    """Sample one text from a TrainedRun while recording every step, and draw its frames.
    `block_size` and `cache` are generate()'s: blocks decoded left to right, through a cache.

    `every` None picks k so that a long run still makes at most about 100 frames. Returns the frames
    and a summary (text, steps, NFE, k, frame size)."""
    from atat_cli.sampling import generate
    from atat_cli.sampling.prompts import build_layout

    if trained.cfg.method == "ar":
        raise AtatError("an AR run writes left to right, one token per step: there is no denoising to animate",
                        "pass a diffusion run (trained with --method mdlm or atat)")
    if color == "importance" and trained.importance is None:
        raise AtatError("--color importance needs an importance estimator, and this run has none",
                        "train with --method atat, or use --color confidence")
    if color not in COLORMAPS:
        raise AtatError(f"unknown colour '{color}'", f"choose one of: {', '.join(COLORMAPS)}")
    seq_len = trained.cfg.model.seq_len
    tokenizer = trained.data.tokenizer()
    mask_id = trained.data.vocab_size
    layout_ids = build_layout(prompt, tokenizer, mask_id, seq_len, length).ids
    if len(layout_ids) > seq_len:  # one block: one time grid, so every frame has a meaningful t
        raise AtatError(f"the animation draws one context of {seq_len} tokens; prompt and --length make {len(layout_ids)}",
                        "lower --length or shorten the prompt")
    result = generate(trained, prompt, settings, length=length, num_samples=1, batch_size=1, seed=seed, record=True,
                      block_size=block_size, cache=cache)
    records = result.trajectory[0]
    if every is None:
        every = max(1, math.ceil(len(records) / 100))
    start = np.asarray(layout_ids)
    final = np.asarray(result.samples[0].ids)
    layout = TokenLayout.build(token_pieces(final, tokenizer, trained.data.eos_id), start == mask_id,
                               FrameRenderer.columns(width))
    # t is one time grid's only when the text is one block; blocks restart it, so show the masked count
    n_targets = int((start == mask_id).sum())
    fixed = settings.adaptive is None and (block_size is None or block_size >= n_targets)
    frames = render_frames(layout, start, records, mask_id=mask_id, color=color, every=every,
                           steps=settings.steps if fixed else None, grid=settings.grid, title=title, width=width)
    summary = {"text": result.samples[0].text, "steps": len(records), "nfe": result.nfe, "every": every,
               "frames": len(frames), "size": [int(frames[0].shape[1]), int(frames[0].shape[0])], "seed": result.seed}
    return frames, summary


def animate(trained, prompt: str, settings, out_path: Path, *, fmt: str = "gif", length: int | None = None,
            seed: int | None = 0, color: str = "confidence", every: int | None = None, width: int = WIDTH,
            fps: float = 6.0, hold_s: float = 3.0, frames_dir: Path | None = None, block_size: int | None = None,
            cache: str = "none") -> dict:
    """`atat gif`: sample one text while recording it, write the animation (and PNG frames into
    `frames_dir`), return its summary. A prefix prompt gets 96 new tokens unless `length` says
    otherwise: a paragraph, enough to see the order, short enough to read."""
    if length is None and "[MASK]" not in prompt:
        length = 96
    title = f"{trained.checkpoint.parent.name} · {settings.describe()}   "
    frames, summary = denoising_frames(trained, prompt, settings, length=length, seed=seed, color=color,
                                       every=every, width=width, title=title, block_size=block_size, cache=cache)
    write_animation(frames, out_path, fps=fps, hold_s=hold_s, fmt=fmt)
    if frames_dir is not None:
        write_pngs(frames, frames_dir)
    return summary | {"out": str(out_path), "frames_dir": None if frames_dir is None else str(frames_dir),
                      "run": str(trained.checkpoint.parent), "sampler": settings.describe(), "color": color}
