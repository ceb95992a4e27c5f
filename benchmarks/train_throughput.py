"""Training throughput of the DiT (MDLM) and the AR baseline, next to this machine's matmul peak.

    python benchmarks/train_throughput.py [--size tiny] [--steps N] [--warmup N] [--json out.json]
                                          [--backbones dit,dimamba]

One run measures, side by side:

1. Matmul peak: GFLOP/s of an n x n x n product (default n = 2048, 2 n^3 FLOPs) in fp32 and in
   bf16, best of a few repeats before and again after the training rows, with
   torch.get_num_threads() threads.
2. Training tokens/s for {DiT (mdlm), AR (ar)} x {fp32, bf16 autocast, bf16 autocast +
   torch.compile}; with `--backbones dit,dimamba` the mdlm rows are repeated with
   model.backbone=dimamba (DiMamba rows, and a DiMamba / DiT step-time ratio). A timed step is `Trainer.train_step()` itself (atat_cli/training/trainer.py):
   zero_grad, the next batch of the corpus (default pydocs, its 8192-token BPE), objective.loss
   forward under autocast, backward, clip_grad_norm_, the finite-norm check, AdamW step,
   LR-scheduler step, EMA update. As in the trainer, only the model is wrapped in
   torch.compile; loss, optimiser and EMA are eager.
   Warm-up steps (which include compilation) are excluded. The timed steps are split into
   rounds that visit every configuration in turn, so a slow patch of machine load hits all
   rows alike; the table reports the median step time.
3. Model FLOPs per token and MFU. Per token, forward + backward:

       FLOPs/token = 6 * N_body  +  12 * n_layers * d_model * seq_len  +  6 * d_model * V_out * f

   N_body: weights applied to every token, i.e. all parameters except the token embedding,
   the output head (counted by the last term) and the per-sequence time-conditioning
   weights of the DiT (TimeEmbedding MLP and the adaLN projections act on one vector per
   sequence, so their cost per token is negligible; counting them as 6 * N would inflate the
   DiT's FLOPs by ~25% at tiny). The middle term is attention's QK^T and AV (PaLM appendix B,
   counted in full for the causal AR model too, as is standard). V_out is the head's width
   the step computes: the vocabulary (the DiT drops its mask-id column). f is the fraction of
   positions the head runs at: 1 for AR; for the DiT, which computes logits at masked positions
   only, the expected masking rate E_t[1 - alpha(t)] of its schedule ((1 - eps) / 2 ~ 0.5 under the
   default log-linear one; counting the head at every position would flatter its MFU).
   DiMamba has no attention term; its selective scans count 3 * 9 * d_inner * d_state per token,
   layer and direction (Mamba's 9 FLOPs per channel and state for the forward scan, times 3 for
   forward + backward): the model's FLOPs, not the more the PyTorch prefix scan spends.
   MFU = FLOPs/token * tokens/s / peak, where peak is the measured bf16 matmul GFLOP/s for the
   bf16 rows and the fp32 one for the fp32 rows.
4. Ratios from the same run: bf16/fp32 speed-up, compile speed-up (bf16 + compile vs bf16),
   DiT/AR step-time ratio.

The result is a Markdown table on stdout (and JSON with --json). If torch.compile fails, the
row carries the error instead of a number. `--profile` additionally prints a torch.profiler
table of one eager DiT bf16 step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

import torch

from atat_cli.config import load_config
from atat_cli.device import cpu_has_bf16_matmul
from atat_cli.diffusion import build_schedule, time_of
from atat_cli.models import count_parameters
from atat_cli.training import Trainer

MODES = ("fp32", "bf16", "bf16+compile")
METHODS = ("mdlm", "ar")
BACKBONES = ("dit", "dimamba")  # of the mdlm rows; AR has its own transformer
MODEL_NAME = {("mdlm", "dit"): "DiT", ("mdlm", "dimamba"): "DiMamba", ("ar", "dit"): "AR"}
# Reference point quoted in the issue: plain PyTorch transformer, 8 x 256, seq 256, batch 16, vocab 8192.
REFERENCE_TOKENS_PER_S = {"fp32": 1400, "bf16": 3200, "bf16+compile": 5400}


# --- matmul peak ---------------------------------------------------------------------------


def matmul_peak(n: int, dtype: torch.dtype, repeats: int, inner: int, device: torch.device | None = None) -> float:
    """Best GFLOP/s over `repeats` timings of `inner` back-to-back n^3 products (synchronised on CUDA)."""
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it; a no-op on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- FLOPs ---------------------------------------------------------------------------------


def expected_masked_fraction(cfg) -> float:
    """E_t[1 - alpha(t)] for t = (1 - eps) u + eps, u uniform: (1 - eps) / 2 under the log-linear schedule."""
    schedule = build_schedule(cfg.diffusion.schedule, cfg.diffusion.eps)
    u = (torch.arange(10_000, dtype=torch.float64) + 0.5) / 10_000
    return float(schedule.mask_rate(time_of(u, cfg.diffusion.eps)).mean())


def flops_per_token(model, cfg) -> dict:
    m = cfg.model
    head = model.final.linear
    diffusion = cfg.method != "ar"
    v_out = head.out_features - 1 if diffusion else head.out_features  # the DiT drops the mask-id logit
    head_fraction = expected_masked_fraction(cfg) if diffusion else 1.0  # masked positions only
    per_sequence = 0
    for name, p in model.named_parameters():
        if name.startswith("time.") or ".adaLN." in name or name.startswith("final.adaLN"):
            per_sequence += p.numel()
    head_params = sum(p.numel() for p in head.parameters())
    body = count_parameters(model, non_embedding=True) - head_params - per_sequence
    # The mixing that no weight counts: attention's QK^T and AV, or DiMamba's two selective scans.
    if diffusion and m.backbone == "dimamba":
        mixing, scan = 0, 3 * 9 * m.n_layers * 2 * m.expand * m.d_model * m.d_state
    else:
        mixing, scan = 12 * m.n_layers * m.d_model * m.seq_len, 0
    head_flops = 6 * m.d_model * v_out * head_fraction
    return {"params_total": count_parameters(model), "params_body": body, "params_per_sequence": per_sequence,
            "params_head": head_params, "v_out": v_out, "head_fraction": head_fraction,
            "flops_body": 6 * body, "flops_attention": mixing, "flops_scan": scan, "flops_head": head_flops,
            "flops_per_token": 6 * body + mixing + scan + head_flops}


# --- one training configuration -------------------------------------------------------------


class Setup:
    """A Trainer for one (method, backbone, mode): every timed step is `Trainer.train_step()` itself."""

    def __init__(self, size: str, method: str, mode: str, data: str, batch: int | None, seed: int,
                 backbone: str = "dit"):
        overrides = ["train.max_steps=1000000", f"data.name={data}", f"train.seed={seed}",
                     f"train.precision={'fp32' if mode == 'fp32' else 'bf16'}",
                     f"train.compile={'true' if mode == 'bf16+compile' else 'false'}",
                     f"model.backbone={backbone}"]
        if batch:
            overrides.append(f"train.batch_size={batch}")
        self.cfg = cfg = load_config(size, method, overrides=overrides)
        self.method, self.mode, self.backbone = method, mode, backbone
        self.model_name = MODEL_NAME[method, backbone]
        self.name = f"{self.model_name} {mode}"
        self.trainer = Trainer(cfg, progress=False, log=lambda *a, **k: None)
        self.model = self.trainer.model
        self.vocab = self.trainer.data.vocab_size
        self.tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.seq_len
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU seconds per timed step (all threads)
        self.error: str | None = None
        self.last_loss = float("nan")

    def step(self) -> float:
        """One trainer step; returns its wall time in seconds."""
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = self.trainer.train_step()
        elapsed = time.perf_counter() - t0
        self.last_cpu = time.process_time() - c0
        self.last_loss = float(metrics["nelbo" if self.method != "ar" else "nll"][-1])
        return elapsed

    def run(self, n: int, record: bool) -> None:
        if self.error:
            return
        try:
            for _ in range(n):
                dt = self.step()
                if record:
                    self.times.append(dt)
                    self.cpu_times.append(self.last_cpu)
        except Exception as e:  # noqa: BLE001 - a failing row (typically torch.compile) must not sink the others
            self.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            self.error_trace = traceback.format_exc()


# --- profiling -------------------------------------------------------------------------------


def profile_step(setup: Setup, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        setup.trainer.train_step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# --- main ----------------------------------------------------------------------------------


def machine_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_bf16_matmul": cpu_has_bf16_matmul(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def fmt_int(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "–"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="tiny", help="size preset (test, tiny, small, medium)")
    p.add_argument("--data", default="pydocs", help="corpus the batches come from (prepared on first use)")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per configuration (default 0: as many as fit in --seconds, at least 2 per round)")
    p.add_argument("--seconds", type=float, default=25.0, help="target timed seconds per configuration when --steps=0")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per configuration (compilation included)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the timed steps are split into")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of: mdlm, ar")
    p.add_argument("--backbones", default="dit",
                   help="comma list of the mdlm rows' model.backbone: dit, dimamba (e.g. dit,dimamba for both)")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of: fp32, bf16, bf16+compile")
    p.add_argument("--matmul-n", type=int, default=2048, help="side of the square matmul for the peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--profile", action="store_true", help="also print a torch.profiler table of one eager DiT bf16 step")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    backbones = [b for b in args.backbones.split(",") if b]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m}")
    for b in backbones:
        if b not in BACKBONES:
            p.error(f"unknown backbone {b}")
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m}")

    t_start = time.perf_counter()
    info = machine_info()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr, table on stdout
    log(f"torch {info['torch']}, {info['threads']} threads, CPU: {info.get('cpu', '?')}, "
        f"bf16 matmul units: {info['cpu_bf16_matmul']}, load average {info.get('loadavg_start')}")

    # 1. matmul peak
    n = args.matmul_n
    peak = {"fp32": matmul_peak(n, torch.float32, repeats=5, inner=3),
            "bf16": matmul_peak(n, torch.bfloat16, repeats=5, inner=6)}
    log(f"matmul peak {n}^3: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s")

    # 2. set-ups and warm-up (compilation happens here, untimed)
    setups: list[Setup] = []
    configurations = [(method, backbone) for method in methods
                      for backbone in (backbones if method != "ar" else ["dit"])]
    for method, backbone in configurations:
        for mode in modes:
            s = Setup(args.size, method, mode, args.data, args.batch_size, args.seed, backbone)
            t0 = time.perf_counter()
            s.run(max(args.warmup, 1), record=False)
            s.warmup_seconds = time.perf_counter() - t0
            # One more untimed step to estimate the step time for --steps=0.
            s.run(1, record=False)
            s.probe = time.perf_counter() - t0 - s.warmup_seconds
            state = f"failed: {s.error}" if s.error else f"probe step {s.probe:.2f}s"
            log(f"warm-up {s.name}: {s.warmup_seconds:.1f}s ({state})")
            setups.append(s)

    # 3. timed rounds, interleaved across configurations
    per_round = {}
    for s in setups:
        total = args.steps if args.steps > 0 else max(2 * args.rounds, round(args.seconds / max(s.probe, 1e-3)))
        per_round[s.name] = [total // args.rounds + (1 if r < total % args.rounds else 0) for r in range(args.rounds)]
    for r in range(args.rounds):
        for s in setups:
            s.run(per_round[s.name][r], record=True)
        log(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t_start:.0f}s elapsed)")
    info["loadavg_end"] = os.getloadavg()
    # Measure the peak again after the training rows and keep the best: a peak depressed by a
    # burst of load at the start would otherwise inflate every MFU.
    peak_start = dict(peak)
    peak_end = {"fp32": matmul_peak(n, torch.float32, repeats=5, inner=3),
                "bf16": matmul_peak(n, torch.bfloat16, repeats=5, inner=6)}
    peak = {k: max(peak_start[k], peak_end[k]) for k in peak}
    log(f"matmul peak again: fp32 {peak_end['fp32']:.1f} GFLOP/s, bf16 {peak_end['bf16']:.1f} GFLOP/s")

    # 4. results
    results = []
    for s in setups:
        fl = flops_per_token(s.model, s.cfg)
        row = {"model": s.model_name, "method": s.method, "backbone": s.backbone, "mode": s.mode, "size": s.cfg.size,
               "batch_size": s.cfg.train.batch_size, "seq_len": s.cfg.model.seq_len, "vocab": s.vocab, "data": args.data,
               "tokens_per_step": s.tokens_per_step, "warmup_seconds": round(s.warmup_seconds, 2),
               "steps": len(s.times), "error": s.error, **fl}
        if s.times and not s.error:
            med = statistics.median(s.times)
            q = statistics.quantiles(s.times, n=4) if len(s.times) >= 4 else [min(s.times), med, max(s.times)]
            tps = s.tokens_per_step / med
            peak_key = "fp32" if s.mode == "fp32" else "bf16"
            achieved = fl["flops_per_token"] * tps / 1e9
            row.update({"median_step_s": med, "p25_step_s": q[0], "p75_step_s": q[-1], "tokens_per_s": tps,
                        "achieved_gflops": achieved, "peak_gflops": peak[peak_key], "peak_kind": peak_key,
                        "mfu": achieved / peak[peak_key], "final_loss": s.last_loss,
                        # CPU seconds the process got per wall second per thread: well below 1 means
                        # other processes took cores away during the timed steps.
                        "cpu_share": sum(s.cpu_times) / sum(s.times) / info["threads"]})
        results.append(row)

    def get(name, mode):
        return next((r for r in results if r["model"] == name and r["mode"] == mode and "tokens_per_s" in r), None)

    ratios = {}
    for name in (MODEL_NAME[c] for c in configurations):
        base, bf, comp = get(name, "fp32"), get(name, "bf16"), get(name, "bf16+compile")
        if base and bf:
            ratios[f"{name} bf16 / fp32 speed-up"] = bf["tokens_per_s"] / base["tokens_per_s"]
        if bf and comp:
            ratios[f"{name} compile speed-up (bf16+compile / bf16)"] = comp["tokens_per_s"] / bf["tokens_per_s"]
        if base and comp:
            ratios[f"{name} bf16+compile / fp32 speed-up"] = comp["tokens_per_s"] / base["tokens_per_s"]
    for mode in modes:
        dit, ar, dimamba = get("DiT", mode), get("AR", mode), get("DiMamba", mode)
        if dit and ar:
            ratios[f"DiT / AR step time, {mode}"] = dit["median_step_s"] / ar["median_step_s"]
        if dimamba and dit:
            ratios[f"DiMamba / DiT step time, {mode}"] = dimamba["median_step_s"] / dit["median_step_s"]

    # Markdown
    out = []
    first = setups[0]
    out.append(f"Size `{args.size}`: batch {first.cfg.train.batch_size} x seq {first.cfg.model.seq_len} = "
               f"{first.tokens_per_step} tokens/step, {args.data} (vocab {first.vocab}); torch {info['torch']}, "
               f"{info['threads']} threads; {info.get('cpu', '?')}.")
    out.append("")
    out.append(f"Matmul peak ({n}x{n}x{n}, best of 5 before and 5 after the training rows): fp32 **{peak['fp32']:.1f}** GFLOP/s, "
               f"bf16 **{peak['bf16']:.1f}** GFLOP/s (bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x).")
    out.append("")
    out.append("| model | precision | params (total / per-token body) | MFLOP/token | median step s (p25–p75, n) | "
               "tokens/s | GFLOP/s | MFU (vs peak) | CPU share | issue reference tokens/s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        params = f"{r['params_total'] / 1e6:.2f}M / {r['params_body'] / 1e6:.2f}M"
        mflop = f"{r['flops_per_token'] / 1e6:.1f}"
        ref = fmt_int(REFERENCE_TOKENS_PER_S.get(r["mode"]))
        if "tokens_per_s" in r:
            out.append(f"| {r['model']} | {r['mode']} | {params} | {mflop} | {r['median_step_s']:.3f} "
                       f"({r['p25_step_s']:.3f}–{r['p75_step_s']:.3f}, n={r['steps']}) | "
                       f"{fmt_int(r['tokens_per_s'])} | {r['achieved_gflops']:.1f} | "
                       f"{100 * r['mfu']:.1f}% ({r['peak_kind']}) | {r['cpu_share']:.2f} | {ref} |")
        else:
            err = (r["error"] or "no timed steps").replace("|", "/")
            out.append(f"| {r['model']} | {r['mode']} | {params} | {mflop} | failed: {err} | – | – | – | – | {ref} |")
    out.append("")
    out.append("| ratio (same run) | value |")
    out.append("|---|---|")
    for k, v in ratios.items():
        out.append(f"| {k} | {v:.2f}x |")
    out.append("")
    la0, la1 = info.get("loadavg_start"), info.get("loadavg_end")
    out.append("CPU share: process CPU time / (wall time x threads) over the timed steps; "
               "well below 1.00 means other processes took cores away.")
    out.append(f"Load average (1/5/15 min) at start {tuple(round(x, 2) for x in la0) if la0 else '?'}, "
               f"at end {tuple(round(x, 2) for x in la1)}; total wall time {time.perf_counter() - t_start:.0f}s.")
    print("\n".join(out), flush=True)

    for s in setups:
        if s.error:
            log(f"\n{s.name} failed:\n{getattr(s, 'error_trace', s.error)}")

    if args.profile:
        prof_setup = next((s for s in setups if s.model_name == "DiT" and s.mode == "bf16" and not s.error), None)
        if prof_setup is None:
            prof_setup = Setup(args.size, "mdlm", "bf16", args.data, args.batch_size, args.seed)
            prof_setup.run(2, record=False)
        print("\nProfile of one eager DiT bf16 step (self CPU time):\n")
        print(profile_step(prof_setup, rows=40))

    if args.json:
        payload = {"args": vars(args), "machine": info, "matmul_peak_gflops": peak,
                   "matmul_peak_gflops_start": peak_start, "matmul_peak_gflops_end": peak_end, "results": results,
                   "ratios": ratios, "reference_tokens_per_s": REFERENCE_TOKENS_PER_S,
                   "wall_seconds": time.perf_counter() - t_start}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
