"""Every command group refuses bad input the same way: one `Error: ...` line, a non-zero exit code,
no traceback, and nothing already written is touched.

One row per case: (command, expected exit code, a fragment of the `Error:` line). The rows point at
what the module fixture prepares once: `{mdlm}` and `{ar}` (trained runs of --size test),
`{exported}` (the MDLM run exported), `{tmp}` (a folder of broken files: an empty text, a non-UTF-8
text, a corrupt checkpoint, a folder without checkpoints, damaged exports, YAML with a syntax error
or an unknown key, ...). Rows that Click itself rejects (a
missing argument, a non-integer) print a usage box instead and are checked separately.
"""

import hashlib
import json
import os
import shlex
import shutil

import pytest

from atat_cli.cli.app import main

from conftest import FAST, write_corpus


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Isolated data and runs folders, the 'tinytext' corpus, an MDLM and an AR run, the MDLM run
    exported, broken files."""
    import torch
    from safetensors.torch import load_file, save_file

    from atat_cli.config import CONFIG_DIR, load_config
    from atat_cli.data import ensure_prepared
    from atat_cli.runs import export_run
    from atat_cli.training import Trainer

    root = tmp_path_factory.mktemp("bad_inputs")
    tmp = root / "files"
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATAT_DATA_DIR", str(root / "data"))
        mp.setenv("ATAT_RUNS_DIR", str(root / "runs"))
        mp.setenv("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.delenv("ATAT_DEBUG", raising=False)
        mp.chdir(tmp)  # default outputs (denoise.gif, importance.png, ...) land here, if anywhere
        source = write_corpus(tmp / "src", n_docs=60)
        ensure_prepared("tinytext", files=[source], tokenizer="bytes", progress=False)
        runs = {}
        for name, method, extra in (("mdlm", "mdlm", []), ("ar", "ar", []), ("bd3", "mdlm", ["model.block_size=8"])):
            cfg = load_config("test", method, overrides=FAST + ["train.max_steps=2"] + extra)
            runs[name] = root / "runs" / f"{name}-test-tinytext"
            Trainer(cfg, runs[name], progress=False, log=lambda *a, **k: None).run()

        (tmp / "empty.txt").write_text("")
        (tmp / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
        (tmp / "afile").write_text("x")
        (tmp / "existing.yaml").write_text("# mine, keep me\n")
        (tmp / "secret.yaml").write_text("model: {n_layers: 1}\n")
        (tmp / "broken.yaml").write_text("model: {n_layers: [1\n")
        (tmp / "unknown_key.yaml").write_text("model:\n  bogus: 1\n")
        (tmp / "list.yaml").write_text("- a\n- b\n")
        (tmp / "emptygrid.yaml").write_text("baseline: v1\nvariants: {}\n")
        (tmp / "namedgrid.yaml").write_text("name: g\nbaseline: v1\nvariants:\n  v1: {method: mdlm}\n")
        (tmp / "badvariant.yaml").write_text("baseline: v1\nvariants:\n  v1: {method: bogus}\n")
        (tmp / "badset.yaml").write_text("baseline: v1\nvariants:\n  v1: {method: mdlm, set: [train.bogus=1]}\n")
        (tmp / "nobaseline.yaml").write_text("baseline: zzz\nvariants:\n  v1: {method: mdlm}\n")
        (tmp / "badsampling.yaml").write_text("variants:\n  v1: {sampler: bogus, steps: 2}\n")
        (tmp / "corrupt").mkdir()
        (tmp / "corrupt" / "best.pt").write_bytes(b"not a checkpoint")
        ckpt = runs["mdlm"] / "best.pt"
        (tmp / "truncated.pt").write_bytes(ckpt.read_bytes()[:2000])
        (tmp / "zero.pt").write_bytes(b"")
        torch.save([1, 2], tmp / "listckpt.pt")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        torch.save({**state, "model": {}, "ema": {}}, tmp / "emptyboth.pt")
        torch.save({**state, "config": {"model": {"bogus": 1}}}, tmp / "badcfg.pt")
        (tmp / "nockpt").mkdir()
        (tmp / "emptydir").mkdir()
        (tmp / "adir.gif").mkdir()
        (tmp / "adir.png").mkdir()
        (tmp / "latindir").mkdir()
        (tmp / "latindir" / "train.txt").write_bytes("caf\xe9\n\nabc\n".encode("latin-1"))
        (tmp / "foreign").mkdir()
        (tmp / "foreign" / "notes.txt").write_text("keep me")
        (tmp / "badmetrics").mkdir()
        (tmp / "badmetrics" / "metrics.jsonl").write_text("not json\n{also not\n")
        (tmp / "emptymetrics").mkdir()
        (tmp / "emptymetrics" / "metrics.jsonl").write_text("")
        (tmp / "latinmetrics").mkdir()
        (tmp / "latinmetrics" / "metrics.jsonl").write_bytes('{"step": 1, "loss": 1.0, "note": "\xe9"}\n'.encode("latin-1"))
        corrupt_data = root / "data" / "corruptdata"
        corrupt_data.mkdir(parents=True)
        (corrupt_data / "meta.json").write_text("{not json")
        (root / "data" / "badmeta").mkdir()
        (root / "data" / "badmeta" / "meta.json").write_text("{}")
        exported = root / "exported"
        export_run(runs["mdlm"], exported)

        def damaged(name, file=None, text=None):  # a copy of the export, with `file` replaced by `text`
            folder = tmp / name
            shutil.copytree(exported, folder)
            if file is not None:
                (folder / file).write_text(text)
            return folder

        weights = exported / "model.safetensors"
        damaged("exp_trunc").joinpath("model.safetensors").write_bytes(weights.read_bytes()[:200])
        fewer = load_file(weights)
        fewer.pop(sorted(fewer)[0])
        save_file(fewer, damaged("exp_mismatch") / "model.safetensors")
        (damaged("exp_noweights") / "model.safetensors").unlink()
        config = json.loads((exported / "config.json").read_text())
        damaged("exp_badjson", "config.json", "{not json")
        damaged("exp_hf", "config.json", json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
        damaged("exp_future", "config.json", json.dumps({**config, "atat_format": 99}))
        damaged("exp_badfield", "config.json", json.dumps({**config, "atat_step": "four"}))
        damaged("exp_badtok", "tokenizer/atat_tokenizer.json", '{"kind": "bytes", "name": "other"}')
        secret_rel = os.path.relpath(tmp / "secret.yaml", CONFIG_DIR).removesuffix(".yaml")  # ../../.../secret
        yield {"tmp": str(tmp), "mdlm": str(runs["mdlm"]), "ar": str(runs["ar"]), "bd3": str(runs["bd3"]),
               "exported": str(exported),
               "secret_rel": secret_rel, "root": root}


def _snapshot(root):
    """Hash of every file under the fixture's root: a refused command must leave them all as they were."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


# A training that would start does one step of the tiny test model, so a missed check stays cheap.
TR = ("train --size test --data tinytext --max-steps 1 --no-sample --json --set train.precision=fp32 "
      "--set train.batch_size=4 --set train.eval_batches=1 --out {tmp}/trained")
S = "sample {mdlm} --json --seed 0 --length 8 --steps 2"
G = "gif {mdlm} --json --steps 2 --length 4 --out {tmp}/g.gif"
A = "ablate --size test --data tinytext --tokens 64 --seeds 1 --json --out {tmp}/ablate"
AS = "ablate --sampling {mdlm} --num-samples 1 --length 4 --json --out {tmp}/ablate-sampling"

CASES = [
    # train: names, --set keys, values and types, config files, output folders
    ("train --size huge", 1, "unknown size 'huge'"),
    (TR + " --method diffusion", 1, "unknown method 'diffusion'"),
    ("train --size test --data nosuchcorpus", 1, "unknown corpus 'nosuchcorpus'"),
    (TR + " --data ../data/tinytext", 1, "invalid corpus name"),
    (TR + " --set train.bogus=1", 1, "unknown config key 'train.bogus'"),
    (TR + " --set bogus.key=1", 1, "unknown config key 'bogus'"),
    (TR + " --set optim.lr", 1, "--set expects key=value, got 'optim.lr'"),
    (TR + " --set optim.lr=abc", 1, "config key 'optim.lr' expects float, got 'abc'"),
    (TR + " --set optim.lr=[1", 1, "not valid YAML"),
    (TR + " --set model.n_layers=2.5", 1, "config key 'model.n_layers' expects int, got 2.5"),
    (TR + " --set model.n_layers=true", 1, "config key 'model.n_layers' expects int, got True"),
    (TR + " --set train.compile=maybe", 1, "config key 'train.compile' expects bool"),
    (TR + " --set train.max_steps=ten", 1, "config key 'train.max_steps' expects int"),
    (TR + " --set model=3", 1, "config section 'model' must be a mapping"),
    (TR + " --set method=bogus", 1, "unknown method 'bogus'"),
    (TR + " --set size=bogus", 1, "unknown size 'bogus'"),
    (TR + " --max-steps 0", 1, "max_steps must be at least 1"),
    (TR + " --max-steps -5", 1, "max_steps must be at least 1"),
    (TR + " --seed -1", 1, "train.seed must be >= 0"),
    ("sample {mdlm} --json --length 8 --steps 2 --seed -1", 1, "the seed must be >= 0"),
    ("eval {mdlm} --json --seed -1", 1, "--seed must be >= 0"),
    ("eval {mdlm} --block-size 0", 1, "--block-size must be between 1 and the context length"),
    ("eval {mdlm} --block-size 100000", 1, "--block-size must be between 1 and the context length"),
    ("eval {ar} --block-size 4", 1, "an AR run's NLL is already exact left to right"),
    ("eval {bd3} --block-size 4", 1, "its NELBO is already that bound for its own blocks"),
    ("sample {bd3} --json --length 8 --steps 2 --block-size 4", 1, "it samples in those blocks (got --block-size 4)"),
    ("sample {bd3} --json --length 8 --steps 2 --cache dual", 1, "the dual cache does not apply to it"),
    (TR + " --set model.block_size=5", 1, "model.block_size=5 must divide model.seq_len=32"),
    (TR + " --set model.block_size=-8", 1, "model.block_size=-8 must divide model.seq_len=32"),
    (TR + " --method ar --set model.block_size=8", 1, "model.block_size (BD3-LM's block-causal denoiser) is for --method mdlm"),
    (TR + " --method atat --config atat/seed --set model.block_size=8", 1, "nor the seeds' design"),
    (TR + " --method atat --config atat/position --set model.block_size=8", 1, "not a per-token or per-position schedule"),
    (TR + " --set model.block_size=8 --set model.backbone=dimamba", 1, "is for --method mdlm or atat with the DiT"),
    (TR + " --set model.block_size=8 --set diffusion.parameterization=sedd", 1, "model.block_size (BD3-LM) builds on SUBS"),
    (TR + " --set optim.lr=inf", 1, "'optim.lr' must be a finite number"),
    (TR + " --set optim.lr=nan", 1, "'optim.lr' must be a finite number"),
    (TR + " --set diffusion.eps=nan", 1, "'diffusion.eps' must be a finite number"),
    (TR + " --set optim.lr=0", 1, "optim.lr must be > 0"),
    (TR + " --set optim.min_lr_ratio=2", 1, "min_lr_ratio in [0, 1]"),
    (TR + " --set optim.grad_clip=-1", 1, "optim.grad_clip must be >= 0"),
    (TR + " --set optim.warmup_steps=-1", 1, "warmup_steps >= 0"),
    (TR + " --set optim.betas=[0.9]", 1, "optim.betas must be two numbers in [0, 1)"),
    (TR + " --set optim.betas=[0.9,1.0]", 1, "optim.betas must be two numbers in [0, 1)"),
    (TR + " --set optim.ema=2", 1, "optim.ema must be in [0, 1)"),
    (TR + " --set optim.schedule=bogus", 1, "unknown lr schedule 'bogus'"),
    (TR + " --set model.cond_dim=0", 1, "model.cond_dim must be at least 1"),
    (TR + " --set model.n_heads=3", 1, "must be divisible by model.n_heads (3)"),
    (TR + " --set model.seq_len=1", 1, "seq_len >= 2"),
    (TR + " --set model.n_layers=0", 1, "model sizes must be positive"),
    (TR + " --set model.mlp_ratio=0", 1, "model.mlp_ratio must be > 0"),
    (TR + " --set model.dropout=1.5", 1, "model.dropout must be in [0, 1)"),
    (TR + " --set model.attention=bogus", 1, "unknown attention 'bogus'"),
    (TR + " --set train.precision=fp8", 1, "unknown precision 'fp8'"),
    (TR + " --set train.batch_size=0", 1, "train.batch_size and train.grad_accum must be at least 1"),
    (TR + " --set train.batch_size=100000", 1, "not enough data for one batch"),
    (TR + " --set train.grad_accum=0", 1, "train.batch_size and train.grad_accum must be at least 1"),
    (TR + " --set train.keep_last=0", 1, "train.keep_last must be at least 1"),
    (TR + " --set train.log_every=0", 1, "train.log_every, save_every, eval_batches must be >= 1"),
    (TR + " --set model.seq_len=100000", 1, "has fewer than 100000 tokens"),
    (TR + " --set diffusion.schedule=bogus", 1, "unknown schedule 'bogus'"),
    (TR + " --set diffusion.eps=0", 1, "diffusion.eps must be in (0, 0.5)"),
    (TR + " --method atat --set atat.masking.strategy=bogus", 1, "unknown masking strategy 'bogus'"),
    (TR + " --method atat --set atat.importance.target=bogus", 1, "unknown importance target 'bogus'"),
    (TR + " --method atat --set atat.masking.temperature=0", 1, "atat.masking.temperature must be > 0"),
    (TR + " --method atat --set atat.curriculum.easy_until=0.9 --set atat.curriculum.hard_from=0.1", 1, "needs 0 <= easy_until <= hard_from <= 1"),
    (TR + " --config {tmp}/missing.yaml", 1, "config file not found"),
    (TR + " --config {tmp}/broken.yaml", 1, "cannot parse config file"),
    (TR + " --config {tmp}/latin1.txt", 1, "cannot parse config file"),
    (TR + " --config {tmp}/unknown_key.yaml", 1, "unknown config key 'model.bogus'"),
    (TR + " --config {tmp}/list.yaml", 1, "must hold a mapping of sections"),
    (TR + " --config atat/nosuch", 1, "config file not found: atat/nosuch"),
    (TR + " --out {tmp}/afile", 1, "is a file"),
    (TR + " --out {tmp}/foreign", 1, "is not empty and is not an atat run folder"),
    (TR + " --out {tmp}/fresh --resume", 1, "nothing to resume"),
    (TR + " --out {tmp}/nockpt --resume", 1, "nothing to resume"),
    (TR.replace("{tmp}/trained", "{mdlm}"), 1, "already holds a training run"),
    (TR.replace(" --out {tmp}/trained", "") + " --method atat --resume", 1, "nothing to resume"),
    (TR + " --data corruptdata", 1, "corrupt"),
    (TR + " --data badmeta", 1, "corrupt"),
    (TR + " --set data.tokenizer=nosuch", 1, "was prepared from local files"),
    # eval: what to evaluate, on what, how
    ("eval {tmp}/missing", 1, "no such run folder or checkpoint"),
    ("eval {tmp}/corrupt", 1, "corrupt or unreadable checkpoint"),
    ("eval {tmp}/corrupt/best.pt", 1, "corrupt or unreadable checkpoint"),
    ("eval {tmp}/truncated.pt", 1, "corrupt or unreadable checkpoint"),
    ("eval {tmp}/afile", 1, "corrupt or unreadable checkpoint"),
    ("eval {tmp}/zero.pt", 1, "corrupt or unreadable checkpoint"),
    ("eval {tmp}/listckpt.pt", 1, "is not an atat checkpoint"),
    ("eval {tmp}/emptyboth.pt", 1, "does not match the model its config describes"),
    ("eval {tmp}/badcfg.pt", 1, "has an incompatible config: unknown config key 'model.bogus'"),
    ("eval {tmp}/nockpt", 1, "holds no checkpoint"),
    ("eval {tmp}/exp_trunc", 1, "corrupt or unreadable {tmp}/exp_trunc/model.safetensors"),
    ("eval {tmp}/exp_trunc/model.safetensors", 1, "corrupt or unreadable {tmp}/exp_trunc/model.safetensors"),
    ("eval {tmp}/exp_mismatch", 1, "exp_mismatch/model.safetensors does not match the model {tmp}/exp_mismatch/config.json describes"),
    ("eval {tmp}/exp_noweights", 1, "is not a complete atat export: model.safetensors is missing"),
    ("eval {tmp}/exp_badjson", 1, "corrupt {tmp}/exp_badjson/config.json (JSONDecodeError"),
    ("eval {tmp}/exp_hf", 1, "exp_hf/config.json is not the config of an atat export"),
    ("eval {tmp}/exp_future", 1, "exp_future/config.json has atat_format 99"),
    ("eval {tmp}/exp_badfield", 1, "corrupt {tmp}/exp_badfield/config.json"),
    ("eval {tmp}/exp_badtok", 1, "tokenizer files in {tmp}/exp_badtok/tokenizer are not the ones config.json records"),
    ("eval {mdlm} --split train", 1, "unknown split 'train'"),
    ("eval {mdlm} --split bogus", 1, "unknown split 'bogus'"),
    ("eval {mdlm} --mc 0", 1, "--mc and --batch-size must be at least 1"),
    ("eval {ar} --mc 0", 1, "--mc and --batch-size must be at least 1"),
    ("eval {mdlm} --mc -1", 1, "--mc and --batch-size must be at least 1"),
    ("eval {mdlm} --batch-size 0", 1, "--mc and --batch-size must be at least 1"),
    ("eval {mdlm} --max-blocks -1", 1, "--max-blocks at least 0"),
    ("eval {mdlm} --data nosuchcorpus", 1, "unknown corpus 'nosuchcorpus'"),
    ("eval {mdlm} --data ../data/tinytext", 1, "invalid corpus name"),
    ("eval {mdlm} --data corruptdata", 1, "corrupt"),
    # sample: sampler settings, prompts, judges, sizes
    (S + " --sampler bogus", 1, "unknown sampler 'bogus'"),
    (S + " --metric bogus", 1, "unknown uncertainty metric 'bogus'"),
    (S + " --time-grid bogus", 1, "unknown time grid 'bogus'"),
    ("sample {mdlm} --adaptive bogus", 1, "unknown adaptive rule 'bogus'"),
    ("sample {mdlm} --adaptive threshold --sampler ancestral", 1, "adaptive steps need an ordered sampler"),
    (S + " --steps 0", 1, "steps must be at least 1"),
    (S + " --steps -4", 1, "steps must be at least 1"),
    ("sample {mdlm} --adaptive threshold --threshold 0", 1, "threshold must be in (0, 1]"),
    ("sample {mdlm} --adaptive threshold --threshold 1.5", 1, "threshold must be in (0, 1]"),
    ("sample {mdlm} --adaptive threshold --threshold nan", 1, "threshold must be in (0, 1]"),
    ("sample {mdlm} --adaptive entropy-bound --gamma -1", 1, "gamma must be a finite number"),
    ("sample {mdlm} --adaptive entropy-bound --gamma inf", 1, "gamma must be a finite number"),
    (S + " --top-p 0", 1, "top-p must be in (0, 1]"),
    (S + " --top-p 1.5", 1, "top-p must be in (0, 1]"),
    (S + " --temperature -1", 1, "temperature must be >= 0"),
    (S + " --temperature nan", 1, "temperature must be >= 0"),
    ("sample {mdlm} --steps 8 --adaptive threshold", 1, "choose either --steps N or --adaptive RULE"),
    ("sample {ar} --json --seed 0 --prompt 'a [MASK] b'", 1, "cannot fill [MASK] placeholders"),
    ("sample {ar} --steps 0", 1, "steps must be at least 1"),
    (S + " --sampler importance", 1, "run has no importance estimator"),
    (S + " --prompt 'a [MASK]*0 b'", 1, "'[MASK]*0' asks for no tokens"),
    (S + " --prompt 'a [MASK]*+2 b'", 1, "malformed count"),
    (S + " --prompt 'caf\udce9'", 1, "the prompt is not valid UTF-8"),
    (S + " --prompt '" + "x" * 40 + "'", 1, "longer than the model's context of 32"),
    (S + " --prompt 'a [MASK]*-3 b'", 1, "malformed count"),
    (S + " --block-size 0", 1, "block size must be between 1 and the context length 32"),
    (S + " --block-size 33", 1, "block size must be between 1 and the context length 32"),
    (S + " --num-samples 0", 1, "num_samples and batch_size must be at least 1"),
    (S + " --batch-size 0", 1, "num_samples and batch_size must be at least 1"),
    (S + " --length -5", 1, "length must be at least 0"),
    ("sample {mdlm} --steps 2 --length 0", 1, "nothing to generate"),
    (S + " --score", 1, "--score needs a judge"),
    (S + " --judge {tmp}/nojudge/", 1, "is neither a run folder nor a cached Hugging Face model"),
    (S + " --judge {mdlm}", 1, "is a mdlm run, not an AR run"),
    (S + " --judge {tmp}/corrupt", 1, "corrupt or unreadable checkpoint"),
    ("sample {tmp}/missing", 1, "no such run folder or checkpoint"),
    ("sample {tmp}/corrupt", 1, "corrupt or unreadable checkpoint"),
    ("sample {tmp}/exp_trunc", 1, "corrupt or unreadable {tmp}/exp_trunc/model.safetensors"),
    ("sample {tmp}/exp_mismatch", 1, "does not match the model"),
    (S + " --judge {tmp}/exp_badjson", 1, "corrupt {tmp}/exp_badjson/config.json"),
    # ablate: grids, variants, budgets; --sampling on a run
    (A + " --grid bogus", 1, "unknown grid 'bogus'"),
    (A + " --grid {tmp}/broken.yaml", 1, "cannot parse grid file"),
    (A + " --grid {tmp}/latin1.txt", 1, "cannot parse grid file"),
    (A + " --grid {tmp}/list.yaml", 1, "needs a 'variants' mapping"),
    (A + " --grid {tmp}/badvariant.yaml", 1, "variant 'v1': unknown method 'bogus'"),
    (A + " --grid {tmp}/badset.yaml", 1, "variant 'v1': unknown config key 'train.bogus'"),
    (A + " --grid {tmp}/nobaseline.yaml", 1, "baseline 'zzz' is not a variant"),
    (A + " --grid {tmp}/namedgrid.yaml", 1, "unknown grid key 'name'"),
    (A + " --grid {tmp}/missing.yaml", 1, "grid file not found"),
    (A + " --grid {tmp}/emptygrid.yaml", 1, "needs a 'variants' mapping"),
    (A + " --variant nosuch", 1, "unknown variant 'nosuch' in grid 'atat'"),
    (A + " --tokens 0", 1, "--tokens, --seeds, --mc and --workers must be at least 1"),
    (A + " --seeds 0", 1, "--tokens, --seeds, --mc and --workers must be at least 1"),
    (A + " --mc 0", 1, "--tokens, --seeds, --mc and --workers must be at least 1"),
    (A + " --workers 0", 1, "--tokens, --seeds, --mc and --workers must be at least 1"),
    (A + " --size huge", 1, "variant 'mdlm': unknown size 'huge'"),
    (A + " --data nosuchcorpus", 1, "unknown corpus 'nosuchcorpus'"),
    (A + " --set train.bogus=1", 1, "unknown config key 'train.bogus'"),
    ("ablate --sampling {tmp}/missing", 1, "no such run folder or checkpoint"),
    (AS + " --num-samples 0", 1, "--num-samples must be at least 1"),
    (AS + " --length -1", 1, "--length must be at least 0"),
    (AS + " --grid bogus", 1, "unknown sampling grid 'bogus'"),
    (AS + " --grid {tmp}/badsampling.yaml", 1, "sampling variant 'v1': unknown sampler 'bogus'"),
    (AS + " --judge {mdlm}", 1, "is a mdlm run, not an AR run"),
    (AS.replace("{mdlm}", "{ar}"), 1, "an AR run samples left to right"),
    (AS + " --variant nosuch", 1, "unknown sampling variant 'nosuch'"),
    (AS + " --judge {tmp}/corrupt", 1, "corrupt or unreadable checkpoint"),
    (AS + " --length -1", 1, "length must be at least 0"),
    # gif: output format and file, frame settings, sampler
    (G + " --format png", 1, "unknown format 'png'"),
    ("gif {mdlm} --out {tmp}/g.png", 1, "does not end in .gif"),
    ("gif {mdlm} --out {tmp}/g.mp4", 1, "does not end in .gif"),
    (G + " --fps 0", 1, "--fps must be positive"),
    (G + " --fps nan", 1, "--fps must be positive"),
    (G + " --hold -1", 1, "--hold must be at least 0"),
    (G + " --width 10", 1, "--width must be at least"),
    (G + " --every 0", 1, "--every must be at least 1"),
    (G + " --sampler bogus", 1, "unknown sampler 'bogus'"),
    (G + " --steps 0", 1, "steps must be at least 1"),
    (G + " --temperature -1", 1, "temperature must be >= 0"),
    (G + " --color bogus", 1, "unknown colour 'bogus'"),
    (G + " --color importance", 1, "--color importance needs an importance estimator"),
    (G + " --sampler importance", 1, "run has no importance estimator"),
    (G + " --frames {tmp}/afile", 1, "exists and is not a folder"),
    (G + " --prompt 'a [MASK]*-3 b'", 1, "malformed count"),
    (G + " --length -1", 1, "length must be at least 0"),
    (G + " --length 0", 1, "nothing to generate"),
    ("gif {ar} --steps 2 --length 4 --out {tmp}/g.gif", 1, "there is no denoising to animate"),
    ("gif {mdlm} --out {tmp}/adir.gif", 1, "is a folder"),
    ("gif {mdlm} --out {tmp}/nodir/g.gif", 1, "nodir does not exist"),
    ("gif {tmp}/missing --out {tmp}/g.gif", 1, "no such run folder or checkpoint"),
    ("gif {tmp}/exp_badtok --out {tmp}/g.gif", 1, "are not the ones config.json records"),
    # heatmap: what to draw, from which run, where to
    ("heatmap {mdlm}", 1, "choose what to draw"),
    ("heatmap {mdlm} --text x --training", 1, "choose what to draw"),
    ("heatmap {mdlm} --training --out {tmp}/h.jpg", 1, "must be a .png file"),
    ("heatmap {mdlm} --text hello --out {tmp}/h.png", 1, "has no importance estimator (it was trained with --method mdlm)"),
    ("heatmap {ar} --text hello --out {tmp}/h.png", 1, "has no importance estimator (it was trained with --method ar)"),
    ("heatmap {tmp}/corrupt --text hello --out {tmp}/h.png", 1, "corrupt or unreadable checkpoint"),
    ("heatmap {tmp}/missing --training --out {tmp}/h.png", 1, "no such run folder or checkpoint"),
    ("heatmap {tmp}/missing --text hello --out {tmp}/h.png", 1, "no such run folder or checkpoint"),
    ("heatmap {tmp}/exp_hf --text hello --out {tmp}/h.png", 1, "is not the config of an atat export"),
    ("heatmap {tmp}/nockpt --training --out {tmp}/h.png", 1, "no metrics log at"),
    ("heatmap {tmp}/emptymetrics --training --out {tmp}/h.png", 1, "metrics.jsonl is empty"),
    ("heatmap {tmp}/latinmetrics --training --out {tmp}/h.png", 1, "metrics.jsonl is not UTF-8 text"),
    ("heatmap {tmp}/badmetrics --training --out {tmp}/h.png", 1, "metrics.jsonl:1 is not a JSON record"),
    ("heatmap {mdlm} --training --out {tmp}/nodir/h.png", 1, "nodir does not exist"),
    ("heatmap {mdlm} --training --out {tmp}/adir.png", 1, "is a folder"),
    # export: what to export, where to
    ("export {tmp}/missing {tmp}/exp-out", 1, "no such run folder or checkpoint"),
    ("export {tmp}/nockpt {tmp}/exp-out", 1, "holds no checkpoint"),
    ("export {tmp}/corrupt {tmp}/exp-out", 1, "corrupt or unreadable checkpoint"),
    ("export {tmp}/exp_trunc {tmp}/exp-out", 1, "corrupt or unreadable {tmp}/exp_trunc/model.safetensors"),
    ("export {exported} {tmp}/exp-out --no-ema", 1, "holds only the EMA weights"),
    ("export {mdlm} {tmp}/afile", 1, "{tmp}/afile is a file"),
    ("export {mdlm} {tmp}/foreign", 1, "{tmp}/foreign is not empty"),
    ("export {mdlm} {tmp}/foreign --force", 1, "is not empty and is not an atat export"),
    ("export {mdlm} {mdlm}", 1, "is not empty"),
    ("export {mdlm} {exported}", 1, "already holds an export"),
    ("export {mdlm} {tmp}/afile/sub", 1, "cannot write {tmp}/afile/sub"),
    # data: names, files, tokenizers
    ("data fetch nosuchcorpus", 1, "unknown corpus 'nosuchcorpus'"),
    ("data fetch {tmp}/missing.txt --name m", 1, "file not found"),
    ("data fetch {tmp}/src/corpus.txt", 1, "local files need a name"),
    ("data fetch {tmp}/src/corpus.txt --name ../evil --tokenizer bytes", 1, "invalid corpus name"),
    ("data fetch {tmp}/src/corpus.txt --name 'a b' --tokenizer bytes", 1, "invalid corpus name"),
    ("data fetch {tmp}/empty.txt --name e --tokenizer bytes", 1, "empty.txt is empty"),
    ("data fetch {tmp}/afile --name f --tokenizer bytes", 1, "too few to hold out valid and test splits"),
    ("data fetch {tmp}/latin1.txt --name l --tokenizer bytes", 1, "is not UTF-8 text"),
    ("data fetch {tmp}/src/corpus.txt {tmp}/latin1.txt --name mix --tokenizer bytes", 1, "latin1.txt is not UTF-8 text"),
    ("data fetch {tmp}/latindir --name ld --tokenizer bytes", 1, "train.txt is not UTF-8 text"),
    ("data fetch {tmp}/src/corpus.txt --name v --tokenizer bpe --vocab-size 10", 1, "vocab size 10 is too small"),
    ("data fetch {tmp}/src/corpus.txt --name v --tokenizer bpe --vocab-size -5", 1, "vocab size -5 is too small"),
    ("data fetch {tmp}/src/corpus.txt --name tinytext --tokenizer bpe --vocab-size 300", 1,
     "'tinytext' is already prepared with other settings"),
    ("data fetch {tmp}/src/corpus.txt --name v --tokenizer bytes --vocab-size 300", 1, "--vocab-size only applies to a trained tokenizer"),
    ("data fetch {tmp}/src/corpus.txt --name v --tokenizer nosuch-tokenizer", 1, "cannot load tokenizer 'nosuch-tokenizer'"),
    ("data fetch pydocs --name other", 1, "--name is only for local files"),
    ("data fetch pydocs {tmp}/src/corpus.txt", 1, "is a corpus name; give it alone"),
    ("data fetch {tmp}/emptydir --name d --tokenizer bytes", 1, "has no train.txt"),
    ("data info nosuchcorpus", 1, "corpus 'nosuchcorpus' is not prepared"),
    ("data info ../data/tinytext", 1, "invalid corpus name"),
    ("data info corruptdata", 1, "corrupt"),
    ("data info badmeta", 1, "corrupt"),
    # config: presets, files, destinations
    ("config show nosuch", 1, "config file not found: nosuch"),
    ("config show {tmp}/broken.yaml", 1, "cannot parse config file"),
    ("config show {tmp}/latin1.txt", 1, "cannot parse config file"),
    ("config show {tmp}/unknown_key.yaml", 1, "unknown config key 'model.bogus'"),
    ("config show tiny --set model.bogus=1", 1, "unknown config key 'model.bogus'"),
    ("config show tiny --set optim.lr=abc", 1, "config key 'optim.lr' expects float"),
    ("config show tiny --set model.n_heads=3", 1, "must be divisible by model.n_heads (3)"),
    ("config show tiny --method bogus", 1, "unknown method 'bogus'"),
    ("config copy nosuch {tmp}/out.yaml", 1, "unknown preset 'nosuch'"),
    ("config copy tiny {tmp}/existing.yaml", 1, "exists"),
    ("config copy {secret_rel} {tmp}/out.yaml", 1, "unknown preset '../"),
    ("config copy {tmp}/secret.yaml {tmp}/out.yaml", 1, "unknown preset"),
    ("config copy tiny {tmp}/nodir/x.yaml", 1, "is not a folder"),
    ("config copy tiny {tmp}/afile/x.yaml", 1, "afile is not a folder"),
    ("config copy tiny {tmp}", 1, "is a folder"),
]

# Click's own usage errors: a usage box, exit code 2, no traceback.
USAGE_CASES = [
    "data fetch",
    "data info",
    "config copy tiny",
    "eval {mdlm} --mc abc",
    "sample {mdlm} --steps 1.5",
    "train --bogus-flag",
    "gif {mdlm} --fps fast",
    "export {mdlm}",
    "nosuchcommand",
]


def _argv(row, home):
    return [part.format(**home) for part in shlex.split(row)]


def _row(case):
    return case.values[0] if hasattr(case, "values") else case[0]


def _id(row):
    """A readable test id: the shared prefixes shortened to their command."""
    for prefix, short in ((TR, "train"), (TR.replace(" --out {tmp}/trained", ""), "train"), (S, "sample"), (G, "gif"),
                          (A, "ablate"), (AS.removeprefix("ablate --sampling {mdlm}"), "")):
        row = row.replace(prefix, short)
    return row


@pytest.mark.parametrize("row,code,fragment", CASES, ids=[_id(_row(c)) for c in CASES])
def test_bad_input_is_one_clear_error(home, capsys, row, code, fragment):
    before = _snapshot(home["root"])
    result = main(_argv(row, home))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    if row.startswith(("data fetch", "ablate --sampling")):  # refused before any work is logged
        assert err.startswith("Error:"), err
    assert fragment.format(**home) in errors[0], err
    assert not errors[0].startswith(("Error: ValueError", "Error: TypeError", "Error: KeyError",
                                     "Error: UnicodeDecodeError", "Error: RuntimeError")), err
    assert result == code, err
    after = _snapshot(home["root"])
    assert {k: v for k, v in after.items() if k in before} == before, "a refused command changed existing files"


@pytest.mark.parametrize("row", USAGE_CASES)
def test_usage_errors_are_clicks(home, capsys, row):
    result = main(_argv(row, home))
    err = capsys.readouterr().err
    assert result == 2, err
    assert "Usage:" in err and "Traceback" not in err, err


def test_every_command_group_has_rows():
    groups = {}
    for case in CASES:
        if not hasattr(case, "marks"):  # the 60 must be atat's own checks that hold today
            group = _row(case).split()[0]
            groups[group] = groups.get(group, 0) + 1
    assert sum(groups.values()) >= 60
    assert set(groups) == {"train", "eval", "sample", "ablate", "gif", "heatmap", "export", "data", "config"}
    assert min(groups.values()) >= 5, groups


def test_config_copy_refusal_keeps_the_file(home, capsys):
    assert main(_argv("config copy tiny {tmp}/existing.yaml", home)) == 1
    capsys.readouterr()
    assert (home["root"] / "files" / "existing.yaml").read_text() == "# mine, keep me\n"
