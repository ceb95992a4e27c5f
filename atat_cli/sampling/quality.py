"""Sample quality: generative perplexity under a judge, and the unigram entropy of each sample.

Generative perplexity alone rewards repetition (a text that repeats one phrase scores very
well), so it is always reported next to the samples' unigram entropy. The judge scores the
generated text only, conditioned on the prompt, and stops before the first generated EOS:
text after an EOS belongs to another document and would be scored as noise.

A judge is an AR run of atat (`--method ar`, trained on the same data) or a Hugging Face causal
language model by name (`gpt2`) when it is cached or the hub is reachable. Texts are
re-tokenized with the judge's tokenizer, so any judge can score any run.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from atat_cli.errors import AtatError


def unigram_entropy(ids) -> float:
    """Entropy (nats) of the token frequencies of one sample; 0 for an empty one."""
    counts = Counter(int(i) for i in ids)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0


class Judge:
    """A causal LM that scores continuations: subclasses set bos_id, seq_len and implement
    encode(text) and logits(ids (B, T)) -> (B, T, V)."""

    name: str
    bos_id: int
    seq_len: int
    device: torch.device

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def score(self, contexts: list[str], continuations: list[str], batch_size: int = 16) -> list[tuple[float, int]]:
        """(summed NLL in nats, scored tokens) of each continuation given its context. A sequence
        longer than the judge's context keeps its end (the context is cut from the left)."""
        results = []
        for b0 in range(0, len(contexts), batch_size):
            rows, starts = [], []
            for ctx, cont in zip(contexts[b0 : b0 + batch_size], continuations[b0 : b0 + batch_size]):
                ctx_ids = self.encode(ctx) if ctx else []
                cont_ids = self.encode(cont) if cont else []
                seq = ([self.bos_id] + ctx_ids + cont_ids)[-(self.seq_len + 1) :]
                rows.append(seq)
                starts.append(max(len(seq) - len(cont_ids), 1))  # first scored target position
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.bos_id, dtype=torch.long)
            scored = torch.zeros(len(rows), width - 1, dtype=torch.bool)
            for i, (row, s) in enumerate(zip(rows, starts)):
                ids[i, : len(row)] = torch.tensor(row)
                scored[i, s - 1 : len(row) - 1] = True  # targets row[s:], predicted from positions s-1...
            ids = ids.to(self.device)
            logits = self.logits(ids[:, :-1]).float()
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").cpu()
            for i in range(len(rows)):
                results.append((float(nll[i][scored[i]].sum()), int(scored[i].sum())))
        return results


class ARRunJudge(Judge):
    def __init__(self, trained):
        from atat_cli.device import resolve_precision

        if trained.cfg.method != "ar":
            raise AtatError(f"the judge {trained.checkpoint.parent} is a {trained.cfg.method} run, not an AR run",
                            "train one on the same data: atat train --size tiny --method ar")
        self.trained = trained
        self.name = str(trained.checkpoint.parent)
        self.tokenizer = trained.data.tokenizer()
        self.bos_id = trained.data.eos_id  # AR runs are trained with EOS as BOS (shift_right)
        self.seq_len = trained.cfg.model.seq_len
        self.device = next(trained.model.parameters()).device
        self.precision = resolve_precision(trained.cfg.train.precision, self.device)

    def encode(self, text):
        return self.tokenizer.encode(text)

    def logits(self, ids):
        from atat_cli.device import autocast

        with autocast(self.device, self.precision):
            return self.trained.model(ids)


class HubJudge(Judge):
    """A Hugging Face causal LM (e.g. gpt2), from the local cache or the hub."""

    def __init__(self, name: str, device: torch.device):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True)
        except Exception:
            from atat_cli.data.tokenizer import _require_hub

            try:
                _require_hub(name)
            except AtatError as e:
                raise AtatError(f"judge '{name}' is neither a run folder nor a cached Hugging Face model, and "
                                f"the hub is not reachable ({e.message.split('(', 1)[-1].rstrip(')')})",
                                "pass an AR run folder: --judge runs/ar-tiny-pydocs (atat train --method ar)") from None
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForCausalLM.from_pretrained(name)
            except Exception as e:
                raise AtatError(f"could not load judge '{name}' from the Hugging Face hub: {e}".splitlines()[0],
                                "pass an AR run folder as --judge (atat train --method ar)") from None
        self.name, self.tokenizer, self.device = name, tokenizer, device
        self.model = model.to(device).eval()
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.seq_len = int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings) - 1

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def logits(self, ids):
        return self.model(ids).logits


def load_judge(spec: str, device: torch.device) -> Judge:
    """An AR run (folder or checkpoint) when `spec` is a path, else a Hugging Face model name."""
    from atat_cli.runs import load_run

    if Path(spec).exists():
        return ARRunJudge(load_run(spec, device))
    return HubJudge(spec, device)


def generative_perplexity(judge: Judge, contexts: list[str], continuations: list[str]) -> dict:
    """Token-weighted generative perplexity over all continuations, and per continuation."""
    scores = judge.score(contexts, continuations)
    nats = sum(s for s, _ in scores)
    tokens = sum(n for _, n in scores)
    return {"gen_ppl": math.exp(nats / tokens) if tokens else None,
            "nll_per_token": nats / tokens if tokens else None,
            "judge_tokens": tokens,
            "per_sample": [math.exp(s / n) if n else None for s, n in scores]}


def score_generation(generation, judge: Judge | None = None) -> dict:
    """Quality of a Generation: mean unigram entropy always, generative perplexity with a judge.
    Adds `entropy` (and `gen_ppl`) to each sample dict of `generation.to_dict()`'s shape."""
    entropies = [unigram_entropy(s.continuation_ids) for s in generation.samples]
    result = {"entropy": sum(entropies) / len(entropies), "per_sample_entropy": entropies}
    if judge is not None:
        contexts = [generation.prefix] * len(generation.samples)
        result.update(generative_perplexity(judge, contexts, [s.continuation for s in generation.samples]))
        result["judge"] = judge.name
    return result


def generation_report(trained, generation, settings, judge: Judge | None = None) -> dict:
    """What `atat sample --json` prints: the samples with their steps, NFE and entropy (and
    generative perplexity under a judge), totals, and which run and sampler made them."""
    quality = score_generation(generation, judge)
    report = generation.to_dict()
    for i, sample in enumerate(report["samples"]):
        sample["entropy"] = quality["per_sample_entropy"][i]
        if judge is not None:
            sample["gen_ppl"] = quality["per_sample"][i]
    report.update({"run": str(trained.checkpoint.parent), "method": trained.cfg.method,
                   "sampler": "ar" if trained.cfg.method == "ar" else settings.describe(),
                   "entropy": quality["entropy"]})
    if judge is not None:
        report.update({k: quality[k] for k in ("gen_ppl", "nll_per_token", "judge_tokens", "judge")})
    return report
