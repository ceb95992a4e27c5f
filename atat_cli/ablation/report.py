"""The ablation report: one row per variant, mean and spread over seeds, compared with the baseline.

Columns: what the training objective is (ATAT kinds), bits per byte and perplexity bound
(uniform-masking NELBO; AR: exact NLL) with mean and standard deviation over seeds, its change
against the baseline in percent, a per-token or per-position schedule's own bound beside it (with
its change), the tokens (and the training seconds, tokens / tokens-per-second) needed to reach the
baseline's final validation loss, training tokens/s and wall time. A variant is called better or
worse than the baseline only when the gap in bits per byte exceeds the seeds' combined spread;
otherwise "within noise". A design with its own forward process is judged, and its validation
curve followed, on its own bound: both bounds are upper bounds on an NLL of the same denoiser,
and the own one is the bound of the reverse process it trains and samples with.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from atat_cli.ablation.runner import RunRecord

COLUMNS = ["variant", "method", "objective", "seeds", "bits_per_byte", "bits_per_byte_std", "change_pct",
           "own_bits_per_byte", "own_bits_per_byte_std", "own_change_pct", "ppl", "ppl_std", "tokens", "epochs", "tokens_to_baseline",
           "seconds_to_baseline", "tokens_per_s", "wall_s", "importance_spearman", "vs_baseline"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _tokens_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((tokens for tokens, loss in curve if loss <= target), None)


def build_report(records: list[RunRecord], baseline: str, grid: str = "") -> dict:
    by_variant: dict[str, list[RunRecord]] = {}
    for r in records:
        by_variant.setdefault(r.variant, []).append(r)
    base_runs = by_variant.get(baseline, [])
    base_final = [r.curve[-1][1] for r in base_runs if r.curve]
    target = statistics.mean(base_final) if base_final else None
    base_bpb = _mean_std([r.evaluation["bits_per_byte"] for r in base_runs])
    rows = []
    for name, runs in by_variant.items():
        bpb, bpb_std = _mean_std([r.evaluation["bits_per_byte"] for r in runs])
        ppl, ppl_std = _mean_std([r.evaluation["ppl"] for r in runs])
        reached = [_tokens_to_reach(r.curve, target) for r in runs] if target is not None else []
        spearman = [r.evaluation["importance_spearman"] for r in runs if r.evaluation.get("importance_spearman") is not None]
        own = [r.evaluation["own_bits_per_byte"] for r in runs if "own_bits_per_byte" in r.evaluation]
        own_bpb, own_std = _mean_std(own) if own else (None, None)
        judged, judged_std = (own_bpb, own_std) if own else (bpb, bpb_std)
        # training seconds to the baseline's final loss: the equal-wall-time view of a design that
        # computes less (or more) per token
        seconds = [t / r.tokens_per_s for t, r in zip(reached, runs) if t is not None and r.tokens_per_s]
        if name == baseline:
            verdict = "baseline"
        elif math.isnan(base_bpb[0]):
            verdict = "n/a"
        elif abs(judged - base_bpb[0]) <= judged_std + base_bpb[1]:
            verdict = "within noise"
        else:
            verdict = "better" if judged < base_bpb[0] else "worse"
        rows.append({
            "variant": name, "method": runs[0].method, "objective": runs[0].evaluation.get("objective"),
            "seeds": len(runs), "bits_per_byte": bpb, "bits_per_byte_std": bpb_std,
            "change_pct": 100 * (bpb - base_bpb[0]) / base_bpb[0] if not math.isnan(base_bpb[0]) else None,
            "own_bits_per_byte": own_bpb, "own_bits_per_byte_std": own_std,
            "own_change_pct": 100 * (own_bpb - base_bpb[0]) / base_bpb[0] if own and not math.isnan(base_bpb[0]) else None,
            "ppl": ppl, "ppl_std": ppl_std,
            "tokens": runs[0].tokens, "epochs": runs[0].epochs,
            # the mean over seeds that reached it; None when no seed did
            "tokens_to_baseline": statistics.mean([t for t in reached if t is not None]) if any(t is not None for t in reached) else None,
            "tokens_to_baseline_reached": sum(t is not None for t in reached),
            "seconds_to_baseline": statistics.mean(seconds) if seconds else None,
            "tokens_per_s": statistics.mean([r.tokens_per_s for r in runs if r.tokens_per_s]) if any(r.tokens_per_s for r in runs) else None,
            "wall_s": statistics.mean([r.train_seconds for r in runs]),
            "importance_spearman": statistics.mean(spearman) if spearman else None,
            "vs_baseline": verdict,
        })
    return {
        "grid": grid, "baseline": baseline, "baseline_final_val_loss": target,
        "rows": rows,
        "runs": [{"variant": r.variant, "seed": r.seed, "run": str(r.run_dir), "checkpoint": r.evaluation["checkpoint"], "steps": r.steps, "tokens": r.tokens, "epochs": r.epochs,
                  "bits_per_byte": r.evaluation["bits_per_byte"], "nelbo": r.evaluation["nelbo"],
                  "own_bits_per_byte": r.evaluation.get("own_bits_per_byte"),
                  "ppl": r.evaluation["ppl"], "train_seconds": r.train_seconds, "curve": r.curve} for r in records],
    }


def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(report: dict) -> str:
    lines = ["| variant | objective | bits/byte | change | own-process bits/byte | ppl bound | tokens | tokens to baseline's final val loss | seconds to it | tokens/s | wall (s) | importance Spearman | vs baseline |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["rows"]:
        reach = "not reached" if r["tokens_to_baseline"] is None else f"{r['tokens_to_baseline']:,.0f} ({r['tokens_to_baseline_reached']}/{r['seeds']} seeds)"
        own = "-" if r.get("own_bits_per_byte") is None else f"{_fmt(r['own_bits_per_byte'])} ± {_fmt(r['own_bits_per_byte_std'])}"
        if r.get("own_change_pct") is not None:
            own += f" ({r['own_change_pct']:+.1f}%)"
        epochs = "" if r.get("epochs") is None else f" ({r['epochs']} epochs)"
        change = "-" if r.get("change_pct") is None or r["vs_baseline"] == "baseline" else f"{r['change_pct']:+.1f}%"
        lines.append(f"| {r['variant']} | {r.get('objective') or '-'} | {_fmt(r['bits_per_byte'])} ± {_fmt(r['bits_per_byte_std'])} "
                     f"| {change} | {own} | {_fmt(r['ppl'], 2)} ± {_fmt(r['ppl_std'], 2)} | {r['tokens']:,}{epochs} | {reach} "
                     f"| {_fmt(r.get('seconds_to_baseline'), 0)} | {_fmt(r['tokens_per_s'], 0)} | {_fmt(r['wall_s'], 0)} "
                     f"| {_fmt(r['importance_spearman'], 3)} | {r['vs_baseline']} |")
    return "\n".join(lines)


def epochs_table(report: dict) -> str:
    """The data-constrained view: one row per epoch count, each method's bits/byte, and which is
    lower beyond the seeds' combined spread ("no difference" otherwise); "" without epochs."""
    rows = [r for r in report["rows"] if r.get("epochs") is not None]
    if not rows:
        return ""
    methods = sorted({r["method"] for r in rows})
    cell = {(r["epochs"], r["method"]): r for r in rows}
    lines = [f"| epochs | tokens | {' | '.join(methods)} | lower |", "| ---: | ---: |" + " ---: |" * len(methods) + " --- |"]
    for epochs in sorted({r["epochs"] for r in rows}):
        present = [cell[(epochs, m)] for m in methods if (epochs, m) in cell]
        values = " | ".join(f"{_fmt(cell[(epochs, m)]['bits_per_byte'])} ± {_fmt(cell[(epochs, m)]['bits_per_byte_std'])}"
                            if (epochs, m) in cell else "n/a" for m in methods)
        best, *rest = sorted(present, key=lambda r: r["bits_per_byte"])
        lower = "n/a" if not rest else (
            best["method"] if all(o["bits_per_byte"] - best["bits_per_byte"] > o["bits_per_byte_std"] + best["bits_per_byte_std"]
                                  for o in rest) else "no difference")
        lines.append(f"| {epochs} | {present[0]['tokens']:,} | {values} | {lower} |")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> list[Path]:
    from atat_cli.viz.curves import plot_bits_against_epochs, plot_validation_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    by_epochs = epochs_table(report)
    (out / "report.md").write_text(markdown_table(report) + "\n" + (f"\n{by_epochs}\n" if by_epochs else ""))
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["rows"])
    curves: dict[str, list] = {}
    for run in report["runs"]:
        curves.setdefault(run["variant"], []).append(run["curve"])
    plot_validation_curves(curves, out / "val_curves.png", baseline=report["baseline"])
    written = [out / name for name in ("report.md", "report.csv", "report.json", "val_curves.png")]
    epoch_rows = [r for r in report["rows"] if r.get("epochs") is not None]
    if epoch_rows:  # a data-constrained grid: the final loss against the tokens seen, per method
        written.append(plot_bits_against_epochs(epoch_rows, out / "epochs.png"))
    return written
