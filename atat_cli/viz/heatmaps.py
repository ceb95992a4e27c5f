"""Heatmaps: the ATAT estimator's importance over a text and time, and training dynamics.

    pieces, times, matrix = importance_over_time(trained, "The list is sorted in place.")
    plotted = plot_importance(matrix, pieces, times, "importance.png")
    records = load_metrics(run_dir / "metrics.jsonl")
    plotted = plot_training(records, "training.png")
    plotted = plot_curves(records, "curves.png")

Every plot function returns the arrays its artists actually hold (read back from matplotlib,
e.g. `QuadMesh.get_array()`), so a test compares what is drawn with what went in, not merely
that a file appeared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from atat_cli.errors import AtatError

TIMES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BANDS = ("low", "mid", "high")  # masking rate < 0.3, 0.3..0.7, >= 0.7 (atat_cli.objectives.BANDS)
STAGE_COLOURS = {"easy": "#d8ecd8", "medium": "#f2ecd2", "hard": "#f4d8d4"}
FONT = "DejaVu Sans Mono"  # token labels: monospace, so spaces and punctuation stay legible


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def label_of(piece: str) -> str:
    """A token's text as an axis label: line breaks and tabs visible, the leading space dropped
    (each label is its own tick, so word boundaries need no space)."""
    shown = piece.replace("\n", "\u21b5").replace("\t", "\u21e5")
    shown = shown[1:] if shown.startswith(" ") and len(shown) > 1 else shown
    return shown if shown.strip() else "\u2423"  # a lone space as a visible space sign


# ---- importance over a text and time ---------------------------------------------------------


def importance_over_time(trained, text: str, times=TIMES) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The estimator's importance of each token of `text` at each t (fed the schedule's masking
    rate m(t), as in training): (pieces, times, matrix of shape (len(times), tokens)). The seeds'
    estimator rates the clean text; a valid design's x_t estimator rates each token where it is
    masked, in contexts masked at m(t) (`_importance_when_masked`)."""
    import torch

    from atat_cli.diffusion import build_schedule

    if trained.importance is None:
        raise AtatError(f"run {trained.checkpoint.parent} has no importance estimator (it was trained with --method "
                        f"{trained.cfg.method}), so there is no importance to draw",
                        "use --training for its training dynamics, or train with --method atat")
    tokenizer = trained.data.tokenizer()
    ids = tokenizer.encode(text)
    if not ids:
        raise AtatError("--text is empty: there are no tokens to rate", 'pass a sentence, e.g. --text "The list is sorted."')
    if len(ids) > trained.cfg.model.seq_len:
        raise AtatError(f"--text is {len(ids)} tokens, longer than the model's context of {trained.cfg.model.seq_len}",
                        "shorten it (a sentence or two reads best)")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or not len(times) or ((times <= 0) | (times > 1)).any():
        raise AtatError("times must be values in (0, 1]")
    schedule = build_schedule(trained.cfg.diffusion.schedule, trained.cfg.diffusion.eps)
    device = next(trained.model.parameters()).device
    level = schedule.mask_rate(torch.tensor(times, dtype=torch.float64, device=device)).float()
    x = torch.tensor(ids, dtype=torch.long, device=device).repeat(len(times), 1)
    with torch.no_grad():
        if getattr(trained.importance, "input", "x0") == "x_t":
            matrix = _importance_when_masked(trained.importance, x, level, trained.data.vocab_size).cpu().numpy()
        else:  # the seeds' estimator scores the clean text
            matrix = trained.importance(x, level).float().cpu().numpy()
    eos = trained.data.eos_id
    pieces = ["<eos>" if i == eos else tokenizer.decode([i]) for i in ids]
    return pieces, times, matrix


HEATMAP_DRAWS = 8  # random contexts per (t, token) for an estimator that sees x_t


def _importance_when_masked(estimator, x, level, mask_id: int, draws: int = HEATMAP_DRAWS):
    """An x_t estimator predicts a masked position's loss, so each token is rated where it is
    masked: (times, L), the mean over `draws` contexts of the prediction at token j when j is
    masked and every other token is masked at the schedule's rate for that row's t (seed 0)."""
    import torch

    n_times, L = x.shape
    g = torch.Generator(device=x.device).manual_seed(0)
    rows = x.repeat_interleave(draws * L, dim=0)  # (times * draws * L, L): row (t, d, j)
    rate = level.repeat_interleave(draws * L)
    masked = torch.rand(rows.shape, generator=g, device=x.device) < rate[:, None]
    masked |= torch.eye(L, dtype=torch.bool, device=x.device).repeat(n_times * draws, 1)  # token j itself
    x_t = torch.where(masked, torch.full_like(rows, mask_id), rows)
    chunk = 512  # rows per call: a full context of 256 tokens makes 20k rows
    scores = torch.cat([estimator(x_t[i : i + chunk], rate[i : i + chunk]).float() for i in range(0, len(rows), chunk)])
    at_j = scores.view(n_times, draws, L, L).diagonal(dim1=2, dim2=3)  # (times, draws, L): row j at token j
    return at_j.mean(dim=1)


def plot_importance(matrix, pieces: list[str], times, path, title: str = "Token importance over time") -> dict:
    """Heatmap of importance: tokens on x, t on y (0.1 at the bottom). Returns {"importance": array}."""
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    matrix = np.asarray(matrix, dtype=float)
    times = np.asarray(times, dtype=float)
    if matrix.shape != (len(times), len(pieces)):
        raise AtatError(f"importance matrix {matrix.shape} does not match {len(times)} times x {len(pieces)} tokens")
    n = len(pieces)
    fig_w = min(22.0, max(7.0, 0.26 * n + 2.2))
    fig, (ax, ax_mean) = plt.subplots(2, 1, figsize=(fig_w, 5.4), dpi=130, sharex=True,
                                      gridspec_kw={"height_ratios": [4, 1.2], "hspace": 0.06})
    # cells centred on integer token positions and on the given times
    x_edges = np.arange(n + 1) - 0.5
    y_edges = _edges(times)
    # the colour scale spans the values present: an estimator's scores often sit in a narrow
    # range, and a fixed 0..1 scale would paint them all one colour (the colour bar gives the values)
    low, high = float(matrix.min()), float(matrix.max())
    if high - low < 1e-3:  # say so: a flat picture should not be read as a pattern
        title += f"\nnearly uniform: every value within {high - low:.1e} of {low:.4f}"
        low, high = low - 5e-4, high + 5e-4
    mesh = ax.pcolormesh(x_edges, y_edges, matrix, cmap="magma", vmin=low, vmax=high, shading="flat")
    ax.set_yticks(times)
    ax.set_yticklabels([f"{t:.1f}" for t in times])
    ax.set_ylabel("t  (noise level)")
    ax.set_title(title, loc="left", fontsize=11)
    # below: the mean over t, the short answer to "which tokens does it rate important"; dots on
    # a line, not bars, because the axis does not start at 0 (the differences would vanish)
    mean = matrix.mean(axis=0)
    ax_mean.plot(np.arange(n), mean, color="#999999", linewidth=0.8, zorder=1)
    dots = ax_mean.scatter(np.arange(n), mean, c=mean, cmap="magma", norm=mesh.norm, s=28, edgecolors="black",
                           linewidths=0.4, zorder=2)
    span = max(float(mean.max() - mean.min()), 1e-4)
    ax_mean.set_ylim(float(mean.min()) - 0.2 * span, float(mean.max()) + 0.2 * span)
    ax_mean.set_ylabel("mean\nover t", fontsize=9)
    ax_mean.grid(axis="y", alpha=0.3)
    # plain tick labels: matplotlib's offset notation ("1e-5+1") is unreadable in a README picture
    digits = max(2, min(6, 1 - int(math.floor(math.log10(high - low)))))
    mean_digits = max(2, min(7, 1 - int(math.floor(math.log10(span)))))
    ax_mean.yaxis.set_major_formatter(FormatStrFormatter(f"%.{mean_digits}f"))
    ax_mean.yaxis.set_major_locator(MaxNLocator(3))
    ax_mean.spines[["top", "right"]].set_visible(False)
    ax_mean.set_xticks(np.arange(n))
    ax_mean.set_xticklabels([label_of(p) for p in pieces], rotation=90, fontfamily=FONT, fontsize=9)
    ax_mean.set_xlim(-0.5, n - 0.5)
    bar = fig.colorbar(mesh, ax=[ax, ax_mean], fraction=0.025, pad=0.01, format=FormatStrFormatter(f"%.{digits}f"))
    bar.set_label("importance (higher = harder token)")
    _save(fig, path)
    return {"importance": np.asarray(mesh.get_array()).reshape(matrix.shape),
            "mean": np.asarray(dots.get_offsets())[:, 1]}


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; the outer cells as wide as their neighbour)."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mids = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mids[0]], mids, [2 * centres[-1] - mids[-1]]])


# ---- training dynamics from metrics.jsonl ----------------------------------------------------


def load_metrics(path) -> list[dict]:
    """The records of a run's metrics.jsonl; clear errors for a missing, empty or unreadable log."""
    path = Path(path)
    if not path.is_file():
        raise AtatError(f"no metrics log at {path}", "pass a run folder that has been trained (atat train ...)")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise AtatError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", "the log may be damaged") from e
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AtatError(f"{path}:{n} is not a JSON record ({e.msg})", "the log may be damaged") from e
    if not any("loss" in r for r in records):
        raise AtatError(f"{path} holds no training records yet" if records else f"{path} is empty",
                        "train the run for at least train.log_every steps first")
    return records


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def training_arrays(records: list[dict]) -> dict:
    """Per logged training step: steps, tokens, loss and gradient norm by band (3, N; NaN where a
    band was empty), curriculum level and stage (None for runs without a curriculum)."""
    train = [r for r in records if "loss" in r]
    out = {"steps": np.array([r["step"] for r in train], dtype=float),
           "tokens": np.array([_number(r.get("tokens")) for r in train]),
           "loss": np.array([[_number(r.get("loss")) for r in train]]),
           "loss_bands": np.array([[_number(r.get(f"loss_{b}")) for r in train] for b in BANDS]),
           "grad_bands": np.array([[_number(r.get(f"grad_{b}")) for r in train] for b in BANDS]),
           "curriculum": None, "stages": None}
    if any("curriculum_level" in r for r in train):
        out["curriculum"] = np.array([_number(r.get("curriculum_level")) for r in train])
        out["stages"] = [r.get("curriculum_stage") for r in train]
    val = [r for r in records if "val_nelbo" in r]
    out["val_steps"] = np.array([r["step"] for r in val], dtype=float)
    out["val_nelbo"] = np.array([_number(r["val_nelbo"]) for r in val])
    return out


def plot_training(records: list[dict], path, title: str = "Training dynamics") -> dict:
    """Heatmaps over logged steps of the loss and the logit-gradient norm by corruption band
    (blank where a band had no sequence), and the curriculum level with its stages when logged.
    Returns {"loss": (3, N), "grad": (3, N), "curriculum": (N,) or None, "steps": (N,)}."""
    plt = _pyplot()
    a = training_arrays(records)
    if not len(a["steps"]):
        raise AtatError("the metrics log holds no training records")
    has_curriculum = a["curriculum"] is not None
    rows = 3 if has_curriculum else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.3 * rows + 0.4), dpi=130, sharex=True,
                             gridspec_kw={"hspace": 0.28})
    x_edges = _edges(a["steps"])
    plotted = {"steps": a["steps"]}
    for ax, key, name, cmap, label in ((axes[0], "loss_bands", "loss", "viridis", "NELBO (nats / token)"),
                                       (axes[1], "grad_bands", "grad", "cividis", "RMS grad norm (logits)")):
        values = np.ma.masked_invalid(a[key])
        colours = plt.get_cmap(cmap).copy()
        colours.set_bad("white")  # a band with no sequence at that step: blank, not a colour
        # gradient norms span orders of magnitude (the low band carries the 1/t weight): log colours
        norm = None
        if name == "grad" and values.count() and float(values.min()) > 0:
            from matplotlib.colors import LogNorm

            norm = LogNorm(vmin=float(values.min()), vmax=float(values.max()))
        mesh = ax.pcolormesh(x_edges, np.arange(4) - 0.5, values, cmap=colours, norm=norm, shading="flat")
        ax.set_yticks(range(3))
        ax.set_yticklabels([f"{b}\n{rng}" for b, rng in zip(BANDS, ("m<0.3", "0.3-0.7", "m≥0.7"))], fontsize=8)
        ax.set_ylabel("masking band", fontsize=9)
        heading = "Loss by corruption band" if name == "loss" else "Gradient norm by corruption band (log colours)"
        ax.set_title(f"{title} · {heading}" if name == "loss" else heading, loc="left", fontsize=10)
        fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.01).set_label(label, fontsize=8)
        plotted[name] = np.ma.filled(np.ma.asarray(mesh.get_array()).reshape(values.shape).astype(float), np.nan)
    plotted["curriculum"] = None
    if has_curriculum:
        ax = axes[2]
        _shade_stages(ax, x_edges, a["stages"])
        line, = ax.plot(a["steps"], a["curriculum"], color="black", linewidth=1.8)
        ax.set_ylim(-1.15, 1.15)
        ax.set_yticks([-1, 0, 1])
        ax.set_yticklabels(["easy -1", "0", "hard +1"], fontsize=8)
        ax.set_title("Curriculum level (stage shaded)", loc="left", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        # same width as the heatmaps above, so the step axes line up
        fig.colorbar(plt.cm.ScalarMappable(cmap="Greys"), ax=ax, fraction=0.03, pad=0.01).ax.set_visible(False)
        plotted["curriculum"] = np.asarray(line.get_ydata(), dtype=float)
    axes[-1].set_xlabel("training step")
    axes[-1].set_xlim(x_edges[0], x_edges[-1])
    _save(fig, path)
    return plotted


def _shade_stages(ax, x_edges, stages) -> None:
    """Background spans per curriculum stage, labelled once each."""
    start = 0
    for i in range(1, len(stages) + 1):
        if i == len(stages) or stages[i] != stages[start]:
            stage = stages[start]
            ax.axvspan(x_edges[start], x_edges[i], color=STAGE_COLOURS.get(stage, "#eeeeee"), linewidth=0)
            ax.text((x_edges[start] + x_edges[i]) / 2, 0.93, str(stage), transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=8, color="#444444")
            start = i


def plot_curves(records: list[dict], path, title: str = "Training curves") -> dict:
    """Train loss and validation NELBO against training tokens. Returns the plotted (x, y) arrays."""
    plt = _pyplot()
    a = training_arrays(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=130)
    train_line, = ax.plot(a["tokens"], a["loss"][0], color="#7a9cc6", linewidth=1.2,
                          label="train loss (batch NELBO)")
    plotted = {"train": np.vstack(train_line.get_data()).astype(float), "val": None}
    if len(a["val_steps"]):
        # validation records carry steps; tokens grow linearly with steps (a fixed batch shape)
        per_step = _tokens_per_step(a)
        val_line, = ax.plot(a["val_steps"] * per_step, a["val_nelbo"], color="#d1495b", marker="o", linewidth=2,
                            label="validation NELBO (uniform masking)")
        plotted["val"] = np.vstack(val_line.get_data()).astype(float)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("nats / token")
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    _save(fig, path)
    return plotted


def _tokens_per_step(a: dict) -> float:
    ok = np.isfinite(a["tokens"]) & (a["steps"] > 0)
    if not ok.any():
        return float("nan")
    return float(a["tokens"][ok][-1] / a["steps"][ok][-1])


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, bbox_inches="tight", facecolor="white")
    except OSError as e:
        raise AtatError(f"cannot write {path}: {e.strerror or e}", "choose another --out") from e
    finally:
        plt.close(fig)


def draw_training(folder: Path, out_path: Path) -> dict:
    """`atat heatmap --training`: the training-dynamics heatmaps of a run folder's metrics log at
    out_path, its loss curves beside it as curves.png; returns what was drawn."""
    folder, out_path = Path(folder), Path(out_path)
    records = load_metrics(folder / "metrics.jsonl")
    plotted = plot_training(records, out_path, title=f"Training dynamics · {folder.name}")
    curves_path = out_path.with_name("curves.png")
    plot_curves(records, curves_path, title=f"Training curves · {folder.name}")
    return {"run": str(folder), "out": str(out_path), "curves": str(curves_path),
            "steps": plotted["steps"].tolist(), "curriculum": plotted["curriculum"] is not None}


def draw_importance(trained, text: str, out_path: Path) -> dict:
    """`atat heatmap --text`: the estimator's importance of each token of `text` over t, at out_path."""
    pieces, times, matrix = importance_over_time(trained, text)
    name = trained.checkpoint.parent.name
    plot_importance(matrix, pieces, times, out_path, title=f"Token importance over time · {name} (step {trained.step})")
    return {"run": str(trained.checkpoint.parent), "out": str(out_path), "tokens": pieces,
            "t": times.tolist(), "importance": matrix.round(4).tolist()}
