"""GPU check in one command: tests, matmul peak, training tokens/s + MFU, sampling tokens/s, ablate --workers.

On a GPU machine:

    pip install torch -e ".[dev]"          # plus `pip install flash-attn` for the flash rows
    python benchmarks/gpu_check.py         # writes gpu_check.md (and prints it); --json for JSON

On a CPU the same script runs in CI-size form (size `test`, CUDA rows marked skipped):

    python benchmarks/gpu_check.py --quick --data tinytext

Parts, each a Markdown table; a failing part becomes a row with its error, never a stop:
1. Machine: torch, CUDA devices, bf16 support, flash-attn, CPU model, the command line.
2. The test suite (`pytest -q -x -m "not slow"`; --full-tests for all, --no-tests to skip) in a
   subprocess that sees the GPUs: its summary line and wall time.
3. Matmul peak (GFLOP/s of an n^3 product) in fp32 and bf16, synchronised on CUDA.
4. Training tokens/s and MFU per size (default tiny,small on CUDA, test on a CPU): DiT (mdlm) and
   AR in bf16, eager vs torch.compile, attention SDPA vs flash-attn (DiT). A timed step is
   `Trainer.train_step()`, median of --steps after untimed warm-up (compilation included).
   MFU = FLOPs/token (train_throughput.flops_per_token) x tokens/s / measured peak, same precision.
5. Sampling tokens/s and NFE of a freshly initialised DiT: ancestral at two step counts and
   confidence with the adaptive threshold, batch 16.
6. One `atat ablate --workers N` run of a two-variant grid (mdlm, ar), N = visible GPUs (2 on a CPU).
The target ">= 40% MFU for small with bf16 + compile on an H100" gets a met / missed / not measured verdict.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
from train_throughput import expected_masked_fraction, flops_per_token, machine_info, matmul_peak, synchronize  # noqa: E402

from atat_cli.config import load_config  # noqa: E402
from atat_cli.device import cpu_has_bf16_matmul, default_device  # noqa: E402
from atat_cli.models import build_model  # noqa: E402
from atat_cli.models.layers import flash_attn_func  # noqa: E402
from atat_cli.runs import TrainedRun  # noqa: E402
from atat_cli.sampling import SamplerSettings, generate  # noqa: E402
from atat_cli.training import Trainer  # noqa: E402
from atat_cli.training.trainer import prepare_data  # noqa: E402

ROOT = BENCHMARKS.parent
TARGET_MFU = 0.40
TARGET = ">= 40% MFU for small with bf16 + compile on an H100"
CUDA_SKIPPED = "CUDA rows skipped: no CUDA device"
GRID = "baseline: mdlm\nvariants:\n  mdlm: {method: mdlm}\n  ar: {method: ar}\n"


def short_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300].replace("|", "/")


def choose_precision(device: torch.device) -> tuple[str, str]:
    """The precision of the "bf16" rows, and why it is fp32 where bf16 would mislead."""
    if device.type == "cuda":
        return ("bf16", "") if torch.cuda.is_bf16_supported() else ("fp32", "this GPU does not support bf16")
    if cpu_has_bf16_matmul():
        return "bf16", ""
    return "fp32", "this CPU has no bf16 matrix units: bf16 would be emulated and slower than fp32"


def run_tests(full: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", *([] if full else ["-m", "not slow"])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)  # inherits the env: CUDA stays visible
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"command": shlex.join(["python", *cmd[1:]]), "ok": proc.returncode == 0, "returncode": proc.returncode,
            "summary": lines[-1].strip("= ") if lines else proc.stderr.strip()[-300:], "wall_s": time.perf_counter() - t0}


def train_row(size, method, mode, attention, args, device, precision, peak) -> dict:
    row = {"size": size, "model": "AR" if method == "ar" else "DiT", "mode": mode, "attention": attention,
           "precision": precision}
    if attention == "flash" and device.type != "cuda":
        return row | {"status": "skipped: no CUDA"}
    if attention == "flash" and flash_attn_func is None:
        return row | {"status": "skipped: flash-attn not installed"}
    if mode == "compile" and "compile" not in args.modes:
        return row | {"status": "skipped: --quick (torch.compile takes minutes on a CPU)"}
    trainer = None
    try:
        # log_every out of reach: the per-band diagnostics of logging steps stay out of the timed steps.
        overrides = ["train.max_steps=1000000", "train.log_every=1000000", f"data.name={args.data}",
                     f"train.precision={precision}", f"train.compile={'true' if mode == 'compile' else 'false'}",
                     f"model.attention={attention}"]
        cfg = load_config(size, method, overrides=overrides)
        if mode == "compile":
            torch._dynamo.reset()  # each row compiles afresh instead of counting against the recompile limit
        trainer = Trainer(cfg, progress=False, log=lambda *a, **k: None)
        if len(trainer.train_blocks) == 0:
            raise RuntimeError(f"'{args.data}' has no training block of {cfg.model.seq_len} tokens; use a larger corpus")
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_step()
        synchronize(device)
        warmup_s = time.perf_counter() - t0
        times = []
        for _ in range(args.steps):
            synchronize(device)
            t0 = time.perf_counter()
            trainer.train_step()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        flops = flops_per_token(trainer.model, cfg)["flops_per_token"]
        tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.seq_len
        step_s = statistics.median(times)
        tps = tokens_per_step / step_s
        return row | {"status": "ok", "batch": cfg.train.batch_size, "seq_len": cfg.model.seq_len,
                      "flops_per_token": flops, "warmup_s": warmup_s, "steps": len(times), "step_s": step_s,
                      "tokens_per_s": tps, "mfu": flops * tps / (peak[precision] * 1e9) if peak.get(precision) else None}
    except Exception as e:  # noqa: BLE001 - one failing row (torch.compile, memory) must not sink the rest
        return row | {"status": f"failed: {short_error(e)}"}
    finally:
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def sampling_rows(size, args, device, precision) -> list[dict]:
    cfg = load_config(size, "mdlm", overrides=[f"data.name={args.data}", f"train.precision={precision}"])
    data = prepare_data(cfg, progress=False)
    torch.manual_seed(0)
    model = build_model(cfg, data.vocab_size).to(device).eval()
    trained = TrainedRun(cfg, model, data, step=0, checkpoint=Path("(freshly initialised)"))
    length = min(cfg.model.seq_len, args.sample_length) if args.sample_length else cfg.model.seq_len
    settings = [SamplerSettings(sampler="ancestral", steps=n) for n in args.sample_steps]
    settings.append(SamplerSettings(sampler="confidence", adaptive="threshold", threshold=0.9))
    generate(trained, "", settings[0], length=length, num_samples=args.sample_batch,
             batch_size=args.sample_batch, seed=0)  # warm-up: kernel selection and allocator outside the timings
    rows = []
    for s in settings:
        row = {"size": size, "sampler": s.describe(), "precision": precision, "batch": args.sample_batch,
               "length": length}
        try:
            gen = generate(trained, "", s, length=length, num_samples=args.sample_batch,
                           batch_size=args.sample_batch, seed=0)
            rows.append(row | {"status": "ok", "nfe": gen.nfe, "wall_s": gen.seconds,
                               "tokens_per_s": gen.tokens_per_second})
        except Exception as e:  # noqa: BLE001
            rows.append(row | {"status": f"failed: {short_error(e)}"})
    return rows


def run_ablate(args, device) -> dict:
    size = "test" if device.type != "cuda" or args.quick else "tiny"
    workers = torch.cuda.device_count() if device.type == "cuda" else 2
    steps = 8 if size == "test" else 50
    cfg = load_config(size, "mdlm")
    tokens = steps * cfg.train.batch_size * cfg.model.seq_len
    result = {"size": size, "workers": workers, "tokens": tokens, "data": args.data}
    with tempfile.TemporaryDirectory(prefix="gpu-check-ablate-") as tmp:
        grid = Path(tmp) / "grid.yaml"
        grid.write_text(GRID)
        cmd = [sys.executable, "-m", "atat_cli.cli.app", "ablate", "--grid", str(grid), "--data", args.data,
               "--size", size, "--tokens", str(tokens), "--seeds", "1", "--mc", "1", "--workers", str(workers),
               "--out", str(Path(tmp) / "out"), "--json"]
        result["command"] = shlex.join(["atat", *cmd[3:]])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)  # inherits ATAT_DATA_DIR and CUDA
        result["wall_s"] = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return result | {"status": f"failed: {tail[:300].replace('|', '/')}"}
    try:  # stdout holds the JSON report alone (worker logs go to stderr)
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return result | {"status": f"failed: no JSON report on stdout: {proc.stdout.strip()[-200:]}"}
    return result | {"status": "ok", "variants": [{k: r.get(k) for k in ("variant", "bits_per_byte", "tokens_per_s",
                                                                          "wall_s")} for r in report["rows"]]}


def verdict(training: list[dict], machine: dict) -> str:
    if not machine["cuda_devices"]:
        return "not measured (no CUDA device)"
    rows = [r for r in training if r["size"] == "small" and r["model"] == "DiT" and r["mode"] == "compile"
            and r["precision"] == "bf16" and r["status"] == "ok"]
    if not rows:
        return "not measured (no successful small DiT bf16 + compile row)"
    best = max(rows, key=lambda r: r["mfu"])
    text = f"{'met' if best['mfu'] >= TARGET_MFU else 'missed'}: {100 * best['mfu']:.1f}% ({best['attention']})"
    return text if "H100" in machine["cuda_devices"][0] else f"{text}, but this GPU is not an H100"


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def markdown(res: dict) -> str:
    m, out = res["machine"], ["# GPU check", "", f"Command: `{res['command']}`", ""]
    if not m["cuda_devices"]:
        out += [f"**{CUDA_SKIPPED}.** The rows below ran on the CPU in CI-size form.", ""]
    cuda = ", ".join(m["cuda_devices"]) or "none"
    out += table(["machine", "value"], [
        ["torch", m["torch"]], ["CUDA devices", f"{len(m['cuda_devices'])}: {cuda}"],
        ["bf16 on CUDA", m["cuda_bf16"]], ["flash-attn", "installed" if m["flash_attn"] else "not installed"],
        ["CPU", f"{m.get('cpu', '?')} ({m['cpu_count']} cores; torch threads: {m['threads']})"],
        ["CPU bf16 matrix units", m["cpu_bf16_matmul"]],
        ["precision of the bf16 rows", res["precision"] + (f" ({res['precision_note']})" if res["precision_note"] else "")]])
    out += [f"**Target:** {TARGET}: **{res['target']}**", "", "## Tests", ""]
    t = res["tests"]
    out += table(["command", "result", "wall s"], [[f"`{t['command']}`", t["summary"], fmt(t.get("wall_s"), ".0f")]]
                 if "command" in t else [["–", t["summary"], "–"]])
    out += ["## Matmul peak", ""]
    out += table(["precision", f"n ({res['matmul_n']}^3 product)", "GFLOP/s"],
                 [[k, res["matmul_n"], fmt(v, ".1f")] for k, v in res["peak"].items()])
    out += ["## Training", "",
            "One timed step = `Trainer.train_step()`, median over the timed steps after untimed warm-up. "
            f"FLOPs/token: train_throughput.flops_per_token, whose DiT head term is 6·d·V·{res['masked_fraction']:.3f} "
            "(the expected masked fraction: the DiT's head runs only at masked positions). "
            "MFU = FLOPs/token × tokens/s / matmul peak of the row's precision.", ""]
    out += table(["size", "model", "precision", "mode", "attention", "batch × seq", "MFLOP/token", "step s (median, n)",
                  "tokens/s", "MFU", "status"],
                 [[r["size"], r["model"], r["precision"], r["mode"], r["attention"],
                   f"{r['batch']} × {r['seq_len']}" if "batch" in r else "–",
                   fmt(r.get("flops_per_token") and r["flops_per_token"] / 1e6, ".2f"),
                   f"{r['step_s']:.4f} (n={r['steps']})" if "step_s" in r else "–", fmt(r.get("tokens_per_s"), ",.0f"),
                   "–" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%", r["status"]]
                  for r in res["training"]])
    if res["ratios"]:
        out += table(["DiT / AR step time (sdpa)", "ratio"], [[k, f"{v:.2f}x"] for k, v in res["ratios"].items()])
    out += ["## Sampling", "", "A freshly initialised DiT (speed does not depend on training; its uniform predictions "
            "make the adaptive threshold reveal one token per step, the worst case for NFE). tokens/s = generated "
            "tokens / wall s, synchronised.", ""]
    out += table(["size", "sampler", "precision", "batch × length", "NFE", "wall s", "tokens/s", "status"],
                 [[r["size"], r["sampler"], r["precision"], f"{r['batch']} × {r['length']}", fmt(r.get("nfe"), "d"),
                   fmt(r.get("wall_s"), ".3f"), fmt(r.get("tokens_per_s"), ",.0f"), r["status"]]
                  for r in res["sampling"]])
    a = res["ablate"]
    out += ["## Ablate", "", f"`{a.get('command', 'atat ablate')}`", ""]
    out += table(["size", "workers", "tokens per run", "wall s", "status"],
                 [[a.get("size", "–"), a.get("workers", "–"), fmt(a.get("tokens"), ","), fmt(a.get("wall_s"), ".1f"),
                   a["status"]]])
    if a.get("variants"):
        out += table(["variant", "bits/byte", "train tokens/s", "train wall s"],
                     [[v["variant"], fmt(v["bits_per_byte"], ".3f"), fmt(v["tokens_per_s"], ",.0f"),
                       fmt(v["wall_s"], ".1f")] for v in a["variants"]])
    out.append(f"Total wall time: {res['wall_s']:.0f} s.")
    return "\n".join(out) + "\n"


def guarded(fn, *a):
    """A part's result, or its error as a result: one broken part must not stop the others."""
    try:
        return fn(*a)
    except Exception as e:  # noqa: BLE001
        return {"status": f"failed: {short_error(e)}", "summary": f"failed: {short_error(e)}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-size form: size test, few steps, no tests, eager only")
    p.add_argument("--sizes", default=None, help="comma list (default: tiny,small on CUDA, test on a CPU)")
    p.add_argument("--data", default="pydocs", help="corpus (prepared on first use)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 10, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps per row (default 3, quick 1)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul side (default 8192 CUDA, 2048 CPU, quick 512)")
    p.add_argument("--full-tests", action="store_true", help="run the whole test suite, slow tests included")
    p.add_argument("--no-tests", action="store_true", help="skip the test suite (the default with --quick)")
    p.add_argument("--no-ablate", action="store_true", help="skip the `atat ablate --workers` run")
    p.add_argument("--out", default="gpu_check.md", help="Markdown report")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = default_device()
    cuda = device.type == "cuda"
    args.sizes = (args.sizes or ("test" if args.quick or not cuda else "tiny,small")).split(",")
    args.steps = args.steps or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.modes = ("eager",) if args.quick and not cuda else ("eager", "compile")
    args.sample_steps = (8, 16) if args.quick else (64, 128)
    args.sample_batch, args.sample_length = 16, (32 if args.quick else None)
    n = args.matmul_n or (8192 if cuda else 512 if args.quick else 2048)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr

    machine = machine_info() | {
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda_bf16": torch.cuda.is_bf16_supported() if cuda else "n/a (no CUDA)", "flash_attn": flash_attn_func is not None}
    precision, precision_note = choose_precision(device)
    res = {"command": shlex.join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
           "machine": machine, "precision": precision, "precision_note": precision_note, "matmul_n": n}
    if args.no_tests or (args.quick and not args.full_tests):
        res["tests"] = {"summary": "skipped (--no-tests" + (", the --quick default)" if not args.no_tests else ")")}
    else:
        log("running the test suite ...")
        res["tests"] = guarded(run_tests, args.full_tests)

    log("matmul peak ...")
    inner = 20 if cuda else 3
    res["peak"] = {"fp32": guarded(matmul_peak, n, torch.float32, 5, inner, device)}
    if precision == "bf16":  # emulated bf16 on a CPU without matrix units would take long and mean nothing
        res["peak"]["bf16"] = guarded(matmul_peak, n, torch.bfloat16, 5, inner, device)
    res["peak"] = {k: (v if isinstance(v, float) else None) for k, v in res["peak"].items()}

    res["training"], res["ratios"] = [], {}
    res["masked_fraction"] = expected_masked_fraction(load_config(args.sizes[0], "mdlm"))
    for size in args.sizes:
        for method, attention in (("mdlm", "sdpa"), ("mdlm", "flash"), ("ar", "sdpa")):
            for mode in ("eager", "compile"):
                log(f"training {size} {method} {mode} {attention} ...")
                res["training"].append(train_row(size, method, mode, attention, args, device, precision, res["peak"]))
        for mode in ("eager", "compile"):
            dit, ar = ([r for r in res["training"] if r["size"] == size and r["model"] == name and r["mode"] == mode
                        and r["attention"] == "sdpa" and r["status"] == "ok"] for name in ("DiT", "AR"))
            if dit and ar:
                res["ratios"][f"{size}, {precision} {mode}"] = dit[0]["step_s"] / ar[0]["step_s"]

    res["sampling"] = []
    for size in args.sizes:
        log(f"sampling {size} ...")
        rows = guarded(sampling_rows, size, args, device, precision)
        res["sampling"] += rows if isinstance(rows, list) else [{"size": size, "sampler": "–", "precision": precision,
                                                                 "batch": args.sample_batch, "length": "–", **rows}]
    if args.no_ablate:
        res["ablate"] = {"status": "skipped (--no-ablate)"}
    else:
        log("atat ablate --workers ...")
        res["ablate"] = guarded(run_ablate, args, device)
    res["target"] = verdict(res["training"], machine)
    res["wall_s"] = time.perf_counter() - t_start

    text = markdown(res)
    Path(args.out).write_text(text)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    log(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
