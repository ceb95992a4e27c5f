"""Import a model MDLM released (kuleshov-group/mdlm-owt, or any checkpoint in its Hugging Face
format) as an atat export folder (hf_folder.py), which eval, sample and gif then take as RUN.

    from atat_cli.runs.import_mdlm import import_mdlm
    summary = import_mdlm("kuleshov-group/mdlm-owt", "shared/mdlm-owt")   # or a local folder

MDLM's format (the hub repository's config.json and modeling_mdlm.py, and models/dit.py of
github.com/kuleshov-group/mdlm): config.json with model_type "mdlm", vocab_size (the tokenizer's
plus one: the mask id is the last, 50257 of 50258 for GPT-2), model_length, hidden_dim, cond_dim,
n_blocks, n_heads, dropout, time_conditioning; model.safetensors with one tensor per key below,
each under `backbone.`. Its DiT is the one atat's follows, and every weight has the shape of
atat's, so the import renames keys and changes no number (KEYS, BLOCK_KEYS). What differs:

  - MDLM's LayerNorm has a weight and no bias (norm1, norm2, norm_final); atat's adaLN norms have
    neither: model.norm_weight=true gives them MDLM's weight.
  - MDLM embeds sigma, its total noise -log alpha(t), unscaled; atat's DiT is given the masking
    rate r = 1 - alpha(t) and embeds 1000 r. model.time_input=sigma embeds -log(1 - r), the same
    number under every schedule. The released models were trained with time_conditioning=false,
    which zeroes sigma: model.time_input=none embeds 0 whatever the rate.
  - backbone.rotary_emb.inv_freq is a buffer atat computes (base 10000, rotate-half pairs, as
    flash-attn's non-interleaved rotary that MDLM calls): checked, not copied.
  - The mask id: MDLM appends it to the tokenizer (`mask_index = vocab_size`), as atat does, so
    atat's vocabulary is MDLM's vocab_size - 1 and the ids agree.

Everything else is the same: the fused qkv (B, T, 3, H, Dh) without bias, attn_out without bias,
the MLP (4 x width, tanh GELU, biases), adaLN's six chunks (shift, scale, gate for attention,
then for the MLP), modulate x (1 + scale) + shift, gated residuals, the 256-wide cos-then-sin
frequency embedding (max period 10000) with its two-layer SiLU MLP and a SiLU on its output,
the final adaLN (shift, scale) and linear head with bias, and SUBS (diffusion/subs.py).

The tokenizer is read from tokenizer files (tokenizer.json, or GPT-2's vocab.json + merges.txt):
SOURCE's own, --tokenizer's, or else GPT-2's from the hub (MDLM's tokenizer; the hub repository
holds none). It is stored as atat's byte-level BPE tokenizer (kind bpe), so a corpus for `atat
eval` is prepared with it: `atat data fetch NAME --tokenizer DIR/tokenizer`.

Only JSON and safetensors are read, never a pickle (a pytorch_model.bin is refused). The folder
is written as `atat export` writes one: under a temporary name, then renamed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch

from atat_cli.config import RunConfig
from atat_cli.data import tokenizer_fingerprint
from atat_cli.data.tokenizer import EOS_TOKEN, BPETokenizer, Tokenizer
from atat_cli.errors import AtatError
from atat_cli.models import build_model, count_parameters
from atat_cli.runs.export import check_destination
from atat_cli.runs.hf_folder import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, export_config, write_export

MODEL_TYPE = "mdlm"
PREFIX = "backbone."
ROTARY_KEY = PREFIX + "rotary_emb.inv_freq"
ROTARY_BASE = 10000.0
MLP_RATIO = 4.0  # DDiTBlock's mlp_ratio: not in config.json
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")
PICKLES = ("*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl")
DEFAULT_TOKENIZER = "gpt2"  # MDLM's data.tokenizer_name_or_path for OpenWebText
# The corpus an import records: none was prepared here (loading.py says so and how to prepare one).
CORPUS_NAME = "mdlm-import"

# MDLM's key (after `backbone.`) -> atat's DiT key.
KEYS = {
    "vocab_embed.embedding": "embed.weight",
    "sigma_map.mlp.0.weight": "time.mlp.0.weight",
    "sigma_map.mlp.0.bias": "time.mlp.0.bias",
    "sigma_map.mlp.2.weight": "time.mlp.2.weight",
    "sigma_map.mlp.2.bias": "time.mlp.2.bias",
    "output_layer.norm_final.weight": "final.norm.weight",
    "output_layer.linear.weight": "final.linear.weight",
    "output_layer.linear.bias": "final.linear.bias",
    "output_layer.adaLN_modulation.weight": "final.adaLN.weight",
    "output_layer.adaLN_modulation.bias": "final.adaLN.bias",
}
# Within `blocks.{i}.` on both sides.
BLOCK_KEYS = {
    "norm1.weight": "norm1.weight",
    "attn_qkv.weight": "attn.qkv.weight",
    "attn_out.weight": "attn.proj.weight",
    "norm2.weight": "norm2.weight",
    "mlp.0.weight": "mlp.fc.weight",
    "mlp.0.bias": "mlp.fc.bias",
    "mlp.2.weight": "mlp.out.weight",
    "mlp.2.bias": "mlp.out.bias",
    "adaLN_modulation.weight": "adaLN.weight",
    "adaLN_modulation.bias": "adaLN.bias",
}


def key_map(n_blocks: int) -> dict[str, str]:
    """Every key of an MDLM checkpoint with n_blocks blocks (but the rotary buffer) -> atat's key."""
    keys = {PREFIX + k: v for k, v in KEYS.items()}
    for i in range(n_blocks):
        keys.update({f"{PREFIX}blocks.{i}.{k}": f"blocks.{i}.{v}" for k, v in BLOCK_KEYS.items()})
    return keys


def import_mdlm(source: str, out, *, tokenizer: str | None = None, force: bool = False) -> dict:
    """Write the MDLM checkpoint `source` (a folder, or a hub id) to the folder `out` in atat's
    export format. `tokenizer`: a folder or hub id holding the tokenizer files (default: the
    source's own, else GPT-2's from the hub). `force` replaces an earlier export in `out`, and
    nothing else."""
    out = Path(out)
    replace = check_destination(out, force)  # before anything is downloaded or read
    folder, origin = resolve_source(source)
    mdlm_config = read_mdlm_config(folder)
    cfg = run_config(mdlm_config, folder)
    weights = read_weights(folder)
    tok = read_tokenizer(*_tokenizer_folder(tokenizer, folder, source), mdlm_config["vocab_size"])
    model = build_model(cfg, tok.vocab_size)  # the DiT appends the mask id: MDLM's vocab_size rows
    model.load_state_dict(convert_weights(weights, mdlm_config, model.state_dict()))
    with tempfile.TemporaryDirectory(prefix="atat-import-") as scratch:
        tok.save(Path(scratch) / TOKENIZER_DIR)  # what a corpus prepared with it saves, byte for byte
        data = {"name": CORPUS_NAME, "path": "", "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "hash": None,
                "tokenizer_fingerprint": tokenizer_fingerprint(scratch),
                "tokenizer": {"kind": tok.kind, "name": tok.name}, "imported_from": MODEL_TYPE}
        # MDLM's release says nothing of its step or whether these are EMA weights: step 0, "raw".
        config = export_config(cfg.to_dict(), data, 0, "raw", type(model).__name__)
        config["atat_imported_from"] = {"format": MODEL_TYPE, **origin, "config": mdlm_config}
        files = write_export(out, config, model.state_dict(), Path(scratch), replace=replace)
    return {"source": source, **origin, "out": str(out), "parameters": count_parameters(model),
            "layers": cfg.model.n_layers, "width": cfg.model.d_model, "heads": cfg.model.n_heads,
            "seq_len": cfg.model.seq_len, "time_input": cfg.model.time_input,
            "vocab_size": tok.vocab_size, "mask_id": tok.vocab_size, "eos_id": tok.eos_id,
            "files": files, "replaced": replace}


# ---- the source ------------------------------------------------------------------------------

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name: what SOURCE may be
HUB_NAME = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")  # tokenizers also go by a bare name (gpt2)


def resolve_source(source: str) -> tuple[Path, dict]:
    """The local folder holding the checkpoint, and where it came from (for config.json)."""
    path = Path(source)
    if path.is_dir():
        return path, {"path": str(path.resolve())}
    if path.exists():
        if path.match("*.safetensors") or path.name == CONFIG_FILE:
            raise AtatError(f"{source} is a file; SOURCE is the folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}",
                            f"pass its folder: {path.parent}")
        raise AtatError(f"{source} is a file, not a folder with MDLM's {CONFIG_FILE} and {WEIGHTS_FILE}",
                        _NO_PICKLE if any(path.match(p) for p in PICKLES) else None)
    if not HUB_ID.fullmatch(source):
        raise AtatError(f"{source} not found: no such folder, and it is not a hub id (owner/name)",
                        "pass a folder with config.json and model.safetensors, or e.g. kuleshov-group/mdlm-owt")
    snapshot = hub_snapshot(source, [CONFIG_FILE, WEIGHTS_FILE, *TOKENIZER_FILES],
                            f"there is no folder {source} here either")
    return snapshot, {"hub_id": source, "revision": snapshot.name}


_NO_PICKLE = ("atat reads weights only from safetensors and never unpickles; convert the file to "
              f"{WEIGHTS_FILE} with a tool you trust, on a machine you trust")


def read_mdlm_config(folder: Path) -> dict:
    """config.json, checked: MDLM's model_type and every field the DiT is built from."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AtatError(f"{folder} holds no {CONFIG_FILE}", "SOURCE is a folder with MDLM's config.json and model.safetensors")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON and bad UTF-8 alike
        raise AtatError(f"corrupt {path} ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise AtatError(f"corrupt {path}: not a JSON object")
    if config.get("model_type") != MODEL_TYPE:
        raise AtatError(f"{path} has model_type {config.get('model_type')!r}, not {MODEL_TYPE!r}: not an MDLM checkpoint",
                        "atat imports MDLM's released format (kuleshov-group/mdlm-owt)")
    for key in ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AtatError(f"{path}: {key} must be a positive integer, got {value!r}")
    dropout = config.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise AtatError(f"{path}: dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(config.get("time_conditioning", False), bool):
        raise AtatError(f"{path}: time_conditioning must be true or false, got {config['time_conditioning']!r}")
    if config["vocab_size"] < 2:
        raise AtatError(f"{path}: vocab_size {config['vocab_size']} leaves no room for the mask id")
    return config


def run_config(mdlm: dict, folder: Path) -> RunConfig:
    """The atat config that builds MDLM's DiT: its sizes, the two switches, MDLM's diffusion."""
    cfg = RunConfig(method="mdlm", size="imported")
    m = cfg.model
    m.backbone, m.n_layers, m.d_model, m.n_heads = "dit", mdlm["n_blocks"], mdlm["hidden_dim"], mdlm["n_heads"]
    m.mlp_ratio, m.cond_dim, m.seq_len, m.dropout = MLP_RATIO, mdlm["cond_dim"], mdlm["model_length"], float(mdlm.get("dropout", 0.0))
    m.time_input = "sigma" if mdlm.get("time_conditioning", False) else "none"
    m.norm_weight = True
    # MDLM's own: the log-linear schedule with eps 1e-3 (sampling_eps), antithetic times (the defaults).
    try:
        return cfg.validate()
    except AtatError as e:
        raise AtatError(f"{folder / CONFIG_FILE} describes a model atat cannot build: {e.message}", e.hint) from None


# ---- the weights -----------------------------------------------------------------------------


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
        if pickles:
            raise AtatError(f"{folder} holds {pickles[0]}, a pickle, and no {WEIGHTS_FILE}", _NO_PICKLE)
        raise AtatError(f"{folder} holds no {WEIGHTS_FILE}", "SOURCE is a folder with MDLM's config.json and model.safetensors")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type, and OSError
        raise AtatError(f"corrupt or unreadable {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


def convert_weights(weights: dict[str, torch.Tensor], mdlm: dict, expected: dict[str, torch.Tensor]) -> dict:
    """MDLM's state dict as atat's DiT's (`expected`: the built model's), every key and shape
    checked, the errors naming MDLM's key. Values are copied unchanged (in fp32)."""
    keys = key_map(mdlm["n_blocks"])
    missing = [k for k in keys if k not in weights]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AtatError(f"{WEIGHTS_FILE} lacks {missing[0]}{more}, which a {mdlm['n_blocks']}-block MDLM DiT has",
                        "the file is damaged, or config.json does not describe it")
    unknown = sorted(set(weights) - set(keys) - {ROTARY_KEY})
    if unknown:
        raise AtatError(f"{WEIGHTS_FILE} holds {unknown[0]}, which is not a weight of MDLM's DiT with "
                        f"{mdlm['n_blocks']} blocks" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                        "atat imports MDLM's DiT (backbone=dit), not its DiMamba or AR models")
    converted = {}
    for theirs, ours in keys.items():
        tensor = weights[theirs]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise AtatError(f"{WEIGHTS_FILE}: {theirs} has shape {tuple(tensor.shape)}; the model config.json "
                            f"describes needs {tuple(expected[ours].shape)}")
        if not tensor.is_floating_point():
            raise AtatError(f"{WEIGHTS_FILE}: {theirs} holds {tensor.dtype}, not floating-point weights")
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise AtatError(f"{WEIGHTS_FILE}: {theirs} holds NaN or infinite values")
        converted[ours] = tensor
    if ROTARY_KEY in weights:
        check_rotary(weights[ROTARY_KEY], mdlm["hidden_dim"] // mdlm["n_heads"])
    return converted


def check_rotary(inv_freq: torch.Tensor, head_dim: int) -> None:
    """MDLM stores its rotary frequencies; atat computes them (base 10000): they must agree."""
    expected = 1.0 / (ROTARY_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if tuple(inv_freq.shape) != tuple(expected.shape) or not torch.allclose(inv_freq.float(), expected, rtol=1e-5):
        raise AtatError(f"{WEIGHTS_FILE}: {ROTARY_KEY} is not the rotary embedding of base {ROTARY_BASE:g} over "
                        f"heads of {head_dim} channels, the only one atat's DiT has")


# ---- the tokenizer ---------------------------------------------------------------------------


def _tokenizer_folder(tokenizer: str | None, folder: Path, source: str) -> tuple[Path, str]:
    """Where the tokenizer files are, and how to name that place in errors."""
    if tokenizer is not None:
        path = Path(tokenizer)
        if path.is_dir():
            return path, str(path)
        if path.exists() or not HUB_NAME.fullmatch(tokenizer):
            raise AtatError(f"--tokenizer {tokenizer}: not a folder with tokenizer files, nor a hub id")
        return hub_snapshot(tokenizer, list(TOKENIZER_FILES), f"there is no folder {tokenizer} here either"), tokenizer
    if any((folder / name).is_file() for name in TOKENIZER_FILES):  # half a pair: the error names the other half
        return folder, source
    try:
        return hub_snapshot(DEFAULT_TOKENIZER, list(TOKENIZER_FILES), ""), DEFAULT_TOKENIZER
    except AtatError as e:
        raise AtatError(f"{source} holds no tokenizer (tokenizer.json, or vocab.json + merges.txt), and MDLM's, "
                        f"{DEFAULT_TOKENIZER}, is not available: {e.message}",
                        f"put GPT-2's tokenizer.json (hub: openai-community/gpt2) into {source}, "
                        "or pass --tokenizer FOLDER") from None


def read_tokenizer(folder: Path, where: str, rows: int) -> Tokenizer:
    """The tokenizer in `folder`, as atat's byte-level BPE, for a checkpoint whose embedding has
    `rows` rows: atat's vocabulary is rows - 1 and the mask id rows - 1, as MDLM's. An added
    special token at that id (MDLM's GPT-2 tokenizer gets [PAD] there, which wrapped training
    never feeds) is dropped: the model's mask id takes its place."""
    backend = _read_backend(folder, where)
    if backend.token_to_id(EOS_TOKEN) is None:
        raise AtatError(f"the tokenizer of {where} has no {EOS_TOKEN} token",
                        "atat imports MDLM models with a GPT-2 style tokenizer (MDLM's OpenWebText models)")
    size = backend.get_vocab_size(with_added_tokens=True)
    if size == rows:
        backend = _drop_added_token(backend, rows - 1, where)
        size = backend.get_vocab_size(with_added_tokens=True)
    if size != rows - 1:
        raise AtatError(f"the tokenizer of {where} has {size:,} tokens, but the checkpoint's embedding has "
                        f"{rows:,} rows: it needs {rows - 1:,} (the last row is the mask id)",
                        "pass the tokenizer the model was trained with (--tokenizer FOLDER)")
    if backend.token_to_id(EOS_TOKEN) >= rows - 1:
        raise AtatError(f"the tokenizer of {where} puts {EOS_TOKEN} at the mask id {rows - 1}")
    return BPETokenizer(backend)


def _read_backend(folder: Path, where: str):
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if (folder / "tokenizer.json").is_file():
        path = folder / "tokenizer.json"
        try:
            return HFTokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad files
            raise AtatError(f"cannot read the tokenizer {path} ({type(e).__name__}: {e})".splitlines()[0]) from None
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        missing = " and ".join(p.name for p in (vocab, merges) if not p.is_file())
        raise AtatError(f"{where} holds no tokenizer.json, and {missing} of a vocab.json + merges.txt pair "
                        f"{'is' if ' and ' not in missing else 'are'} missing",
                        "put GPT-2's tokenizer.json (hub: openai-community/gpt2) there, or pass --tokenizer FOLDER")
    try:
        backend = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as e:  # noqa: BLE001
        raise AtatError(f"cannot read the tokenizer {vocab} + {merges} ({type(e).__name__}: {e})".splitlines()[0]) from None
    # GPT-2's: byte-level pre-tokenizer without a prefix space, byte-level decoder, EOS special.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if backend.token_to_id(EOS_TOKEN) is not None:
        backend.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])  # its id in vocab.json
    return backend


def _drop_added_token(backend, token_id: int, where: str):
    from tokenizers import Tokenizer as HFTokenizer

    data = json.loads(backend.to_str())
    added = [t for t in data.get("added_tokens", []) if t.get("id") == token_id]
    vocab = (data.get("model") or {}).get("vocab")
    in_model = not isinstance(vocab, dict) or token_id in vocab.values()  # the model's own token: not ours to drop
    if not added or not added[0].get("special") or in_model:
        raise AtatError(f"the tokenizer of {where} has a token of its own at id {token_id}, the checkpoint's mask id",
                        "pass the tokenizer the model was trained with (--tokenizer FOLDER)")
    data["added_tokens"] = [t for t in data["added_tokens"] if t.get("id") != token_id]
    return HFTokenizer.from_str(json.dumps(data))


# ---- the hub ---------------------------------------------------------------------------------


def hub_snapshot(repo_id: str, patterns: list[str], also: str) -> Path:
    """The files of hub repository `repo_id` matching `patterns`: from the local cache if they
    are there, else downloaded. Offline, or with the hub unreachable, an AtatError at once
    (huggingface_hub would retry for a minute)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001, S110 - not in the cache: download below
        pass
    reason = _hub_unavailable()
    also = f"; {also}" if also else ""
    if reason is not None:
        raise AtatError(f"cannot download {repo_id} from the Hugging Face hub: {reason}, and it is not in the "
                        f"local cache{also}", "download it where the hub is reachable, then pass the folder")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - hub errors have many types (not found, gated, HTTP)
        raise AtatError(f"cannot download {repo_id} from the Hugging Face hub ({type(e).__name__}: {e})".splitlines()[0]
                        + also) from None


def _hub_unavailable() -> str | None:
    """Why the hub cannot be reached now, or None when it can."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        return f"{host} is unreachable ({e})"
    return None


__all__ = ["convert_weights", "import_mdlm", "key_map", "read_tokenizer"]
