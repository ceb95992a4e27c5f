"""Validation loss against tokens, one line per variant (mean over seeds, band = min..max)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_validation_curves(curves: dict[str, list[list[tuple[int, float]]]], path: Path, baseline: str | None = None,
                           title: str = "Validation loss (uniform-masking NELBO; AR: NLL)") -> Path:
    fig, ax = _figure()
    for name, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)  # seeds of a variant share their evaluation steps
        tokens = np.array([t for t, _ in runs[0][:n]], dtype=float)
        losses = np.array([[loss for _, loss in r[:n]] for r in runs])
        style = {"color": "black", "linewidth": 2.2} if name == baseline else {"linewidth": 1.6}
        line, = ax.plot(tokens, losses.mean(axis=0), label=name, **style)
        if len(runs) > 1:
            ax.fill_between(tokens, losses.min(axis=0), losses.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("nats / token")
    return _save(fig, ax, title, path)


def plot_bits_against_epochs(rows: list[dict], path: Path,
                             title: str = "Fixed unique tokens, repeated: final validation bits/byte") -> Path:
    """The data-constrained study: one line per method through its variants' final bits/byte
    (mean, bars = std over seeds) against the tokens seen, each point labelled with its epochs."""
    fig, ax = _figure()
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    for method, points in by_method.items():
        points = sorted(points, key=lambda r: r["tokens"])
        tokens = [r["tokens"] for r in points]
        ax.errorbar(tokens, [r["bits_per_byte"] for r in points], yerr=[r["bits_per_byte_std"] for r in points],
                    marker="o", capsize=3, linewidth=1.6, label=method)
        for r in points:
            ax.annotate(f"{r['epochs']} ep", (r["tokens"], r["bits_per_byte"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training tokens seen (unique tokens x epochs)")
    ax.set_ylabel("bits / byte (MDLM: NELBO bound; AR: exact NLL)")
    return _save(fig, ax, title, path)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.5), dpi=120)


def _save(fig, ax, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
