"""lm-evaluation-harness adapter: any `atat` run as an `lm_eval` language model.

lm-eval asks three things of a model; for a run they are:

  loglikelihood(context, continuation): log p(continuation | context) and whether the
      continuation is the greedy one.
      AR: exact, the sum of log p(x_i | x_<i) over the continuation's tokens.
      Diffusion (SUBS: MDLM and every ATAT design): minus the NELBO of the continuation given the
      clean context, MDLM-style: only the continuation's positions are masked (each with the
      rate m(t) of the uniform process), the context stays clean, and

          log p(c | x) >= - E_t [ w(t) sum_{i in c, masked} -log p(c_i | x_t) ],

      estimated with `mc` times per request, stratified over [eps, 1] (the same estimate as
      `atat eval`, restricted to the continuation: a lower bound, not the exact value). Greedy:
      with the whole continuation masked (noise level = its share of the sequence), the argmax
      at every position is the continuation's token.
  loglikelihood_rolling(text): the same over the text in windows of seq_len - 1 tokens, each
      with the text before it as context (as much as fits; BOS before the first).
  generate_until(context, until, max_gen_toks): `atat sample`'s default sampler continuing the
      context, cut at the first stop string.

Sequences longer than one context keep their last seq_len tokens (the continuation whole; a
continuation longer than a context is an error). Requests of equal length are batched, each
repeated `mc` times with its own time.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

from atat_cli.errors import AtatError

HARNESS_EXTRA = "pip install 'atat[lmeval]' (lm-eval, an optional extra)"


def conditional_loglikelihood(trained, pairs: list[tuple[list[int], list[int]]], *, mc: int = 8, seed: int = 0,
                              batch_size: int = 16) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) per (context ids, continuation ids) pair: exact for AR, minus
    the conditional NELBO (a lower bound, `mc` stratified times) for a SUBS diffusion run."""
    from atat_cli.device import autocast, resolve_precision
    from atat_cli.diffusion import build_schedule
    from atat_cli.objectives.base import shift_right

    cfg, model = trained.cfg, trained.model
    if cfg.method != "ar" and cfg.diffusion.parameterization != "subs":
        raise AtatError(f"lm-eval scoring reads SUBS denoisers (mdlm, atat) and AR runs; this run is "
                        f"{cfg.diffusion.parameterization}", "evaluate it with atat eval (its own bound) instead")
    if mc < 1 or batch_size < 1:
        raise AtatError("--mc and --batch-size must be at least 1")
    seq_len = cfg.model.seq_len
    rows = []
    for context, continuation in pairs:
        if not continuation:
            raise AtatError("an lm-eval request has an empty continuation")
        if len(continuation) > seq_len:
            raise AtatError(f"a continuation of {len(continuation)} tokens is longer than the run's context of {seq_len}")
        ids = (list(context) + list(continuation))[-seq_len:]
        rows.append((ids, len(continuation)))
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.train.precision, device)
    mask_id, bos_id = trained.data.vocab_size, trained.data.eos_id
    schedule = None if cfg.method == "ar" else build_schedule(cfg.diffusion.schedule, cfg.diffusion.eps)
    generator = torch.Generator(device=device).manual_seed(seed)
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    by_length: dict[int, list[int]] = {}
    for i, (ids, _) in enumerate(rows):
        by_length.setdefault(len(ids), []).append(i)
    with torch.inference_mode():
        for length, members in sorted(by_length.items()):
            for b0 in range(0, len(members), batch_size):
                chunk = members[b0 : b0 + batch_size]
                x = torch.tensor([rows[i][0] for i in chunk], dtype=torch.long, device=device)  # (n, L)
                n_cont = torch.tensor([rows[i][1] for i in chunk], device=device)
                scored = torch.arange(length, device=device)[None, :] >= (length - n_cont)[:, None]  # (n, L)
                with autocast(device, precision):
                    if cfg.method == "ar":
                        logits = model(shift_right(x, bos_id)).float()
                    else:  # every continuation position masked: the greedy check
                        x_all = torch.where(scored, mask_id, x)
                        logits = model(x_all, scored.float().mean(dim=1)).float()[..., :mask_id]
                greedy = ((logits.argmax(dim=-1) == x) | ~scored).all(dim=1)
                if cfg.method == "ar":
                    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, x[..., None])[..., 0]
                    loglik = (token_lp * scored).sum(dim=1).double()
                else:
                    loglik = -_conditional_nelbo(model, x, scored, mc, schedule, mask_id, generator,
                                                 cfg.diffusion.eps, lambda: autocast(device, precision))
                for i, ll, g in zip(chunk, loglik.tolist(), greedy.tolist()):
                    results[i] = (float(ll), bool(g))
    return results


def _conditional_nelbo(model, x, scored, mc, schedule, mask_id, generator, eps, autocast_ctx) -> torch.Tensor:
    """NELBO nats (n,) of the `scored` positions of x (n, L) given the rest, clean: each row
    repeated mc times, one stratum of [eps, 1] per copy."""
    from atat_cli.diffusion import time_of
    from atat_cli.objectives.base import nelbo_terms

    n = x.shape[0]
    v = (torch.arange(mc, device=x.device).repeat(n) + torch.rand(n * mc, generator=generator, device=x.device)) / mc
    t = time_of(v, eps)  # (n * mc,) row r of request r // mc in stratum r % mc
    x_rep, scored_rep = x.repeat_interleave(mc, dim=0), scored.repeat_interleave(mc, dim=0)
    mask_prob = schedule.mask_rate(t)[:, None] * scored_rep  # the context is never masked
    with autocast_ctx():
        out = nelbo_terms(model, x_rep, t, schedule, mask_id, generator, mask_prob=mask_prob)
    return out.terms.sum(dim=1).double().view(n, mc).mean(dim=1)


def rolling_windows(ids: list[int], seq_len: int, bos_id: int) -> list[tuple[list[int], list[int]]]:
    """A text's tokens as (context, continuation) pairs that score each token once: windows of
    seq_len - 1 tokens, each with as much of the text before it as fits (BOS before the first)."""
    size, padded = seq_len - 1, [bos_id] + list(ids)
    pairs = []
    for start in range(0, len(ids), size):
        window = ids[start : start + size]  # padded[start + 1:] is ids[start:]
        pairs.append((padded[max(0, start + 1 - (seq_len - len(window))) : start + 1], window))
    return pairs


def harness_model(trained, *, mc: int = 8, seed: int = 0, batch_size: int = 16):
    """The run as an `lm_eval.api.model.TemplateLM` (needs the lm-eval extra)."""
    try:
        from lm_eval.api.model import TemplateLM
    except ImportError as e:
        raise AtatError("lm-eval is not installed", HARNESS_EXTRA) from e

    tokenizer = trained.data.tokenizer()
    seq_len = trained.cfg.model.seq_len

    class AtatLM(TemplateLM):
        @property
        def eot_token_id(self) -> int:
            return trained.data.eos_id

        def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
            return tokenizer.encode(string)

        def tok_decode(self, ids) -> str:
            return tokenizer.decode(ids)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            return conditional_loglikelihood(trained, [(c, x) for _, c, x in requests], mc=mc, seed=seed,
                                             batch_size=batch_size)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            totals = []
            for request in requests:
                pairs = rolling_windows(self.tok_encode(request.args[0]), seq_len, trained.data.eos_id)
                scores = conditional_loglikelihood(trained, pairs, mc=mc, seed=seed, batch_size=batch_size)
                totals.append(sum(ll for ll, _ in scores))
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from atat_cli.sampling import SamplerSettings, generate

            texts = []
            for request in requests:
                context, kwargs = request.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                if "[MASK]" in context:
                    raise AtatError("an lm-eval prompt contains [MASK], which atat's prompts read as a span to fill")
                out = generate(trained, context, SamplerSettings(), length=int(kwargs.get("max_gen_toks", 64)),
                               seed=seed)
                text = out.samples[0].continuation
                cut = min((text.find(s) for s in until if s and s in text), default=len(text))
                texts.append(text[:cut])
            return texts

    return AtatLM()


def run_tasks(trained, tasks: list[str], *, task_dir: str | None = None, limit: int | None = None,
              num_fewshot: int | None = None, mc: int = 8, seed: int = 0, batch_size: int = 16,
              quiet: bool = False) -> dict:
    """lm-eval's `simple_evaluate` of the run on `tasks` (names; `task_dir` adds a folder of task
    YAMLs): {"results": per-task metrics, "samples": per-task per-document responses}."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise AtatError("lm-eval is not installed", HARNESS_EXTRA) from e
    if not tasks:
        raise AtatError("--tasks names no task", "e.g. --tasks lambada_openai,hellaswag")
    if limit is not None and limit < 1:
        raise AtatError(f"--limit must be at least 1 (got {limit})")
    # lm-eval's own index takes seconds to build (thousands of YAMLs): not needed when --task-dir has them all
    manager = TaskManager(include_path=task_dir, include_defaults=False) if task_dir else None
    if manager is None or not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=task_dir)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise AtatError(f"unknown lm-eval task '{unknown[0]}'",
                        "list them with `lm-eval ls tasks`; a local task folder goes to --task-dir")
    # lm-eval prints to stdout, which belongs to atat's own output (--json); its bars go quiet with `quiet`
    with contextlib.redirect_stdout(sys.stderr), _env(TQDM_DISABLE="1" if quiet else None):
        out = simple_evaluate(model=harness_model(trained, mc=mc, seed=seed, batch_size=batch_size), tasks=tasks,
                              num_fewshot=num_fewshot, limit=limit, task_manager=manager, log_samples=True,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed)
    return {"results": out["results"], "samples": out.get("samples", {})}


@contextlib.contextmanager
def _env(**values):
    """Environment variables set (None: left alone) for the duration of a block."""
    saved = {k: os.environ.get(k) for k, v in values.items() if v is not None}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
