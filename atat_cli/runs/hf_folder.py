"""Exported models: one folder in the Hugging Face layout, which every RUN argument accepts.

`atat export RUN DIR` writes

    config.json         the model in Hugging Face terms (architectures, model_type, sizes, token
                        ids), then atat's own record: atat_format, the run config, the corpus the
                        run was trained on (with its tokenizer's fingerprint), the step, and which
                        weights these are (ema or raw)
    model.safetensors   the weights, one tensor per state-dict key
    tokenizer/          the tokenizer as the prepared corpus saved it (atat_tokenizer.json, plus a
                        BPE's tokenizer.json or a hub tokenizer's files)

so a model travels as one folder and samples on a machine without its corpus (evaluation still
needs the corpus: its token streams are not exported). The tokenizer sits in a subfolder, as in
a prepared corpus, so that its fingerprint is computed the same way and a hub tokenizer's files
never meet this config.json (`AutoTokenizer.from_pretrained(DIR, subfolder="tokenizer")` loads
one).

Reading a folder runs no pickle, only JSON and safetensors, and checks each file: a damaged or
foreign folder is refused with the file named. The folder is written under a temporary name and
renamed into place, so one that has both files under its own name is complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch

from atat_cli.data import tokenizer_fingerprint
from atat_cli.errors import AtatError

FORMAT = 1  # bump when a reader of the previous format could not read what is written
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


def looks_exported(folder: Path) -> bool:
    """Whether `folder` is meant as an export (it may still be incomplete or damaged)."""
    return (folder / CONFIG_FILE).is_file() or (folder / WEIGHTS_FILE).is_file()


def _redo(folder: Path) -> str:
    return f"export the run again: atat export RUN {folder} --force"


def export_config(run_config: dict, data: dict, step: int, weights: str, architecture: str) -> dict:
    """config.json: the keys a Hugging Face user looks for first, then atat's record."""
    model, diffusion = run_config["model"], run_config["method"] != "ar"
    return {
        "architectures": [architecture],
        "model_type": f"atat-{run_config['method']}",
        "vocab_size": data["vocab_size"],  # the tokenizer's; a diffusion model's embedding has one more row, [MASK]
        "mask_token_id": data["vocab_size"] if diffusion else None,
        "eos_token_id": data["eos_id"],
        "bos_token_id": None if diffusion else data["eos_id"],  # AR runs are trained with EOS as BOS
        "hidden_size": model["d_model"],
        "num_hidden_layers": model["n_layers"],
        "num_attention_heads": model["n_heads"],
        "max_position_embeddings": model["seq_len"],
        "torch_dtype": "float32",
        "atat_format": FORMAT,
        "atat_weights": weights,
        "atat_step": step,
        "atat_data": data,
        "atat_run_config": run_config,
    }


def write_export(folder: Path, config: dict, weights: dict[str, torch.Tensor], tokenizer_source: Path,
                 replace: bool = False) -> list[str]:
    """Write an export to `folder` (absent or empty; with `replace`, an earlier export is replaced);
    returns the files written, relative to it. `tokenizer_source` holds the tokenizer/ folder to copy
    (a prepared corpus, or another export)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # safetensors refuses tensors that share storage (tied weights) or are not contiguous:
        # each one gets its own contiguous copy.
        tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in weights.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        shutil.copytree(Path(tokenizer_source) / TOKENIZER_DIR, tmp / TOKENIZER_DIR)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        if replace and folder.is_dir() and any(folder.iterdir()):
            os.replace(folder, old)
        os.replace(tmp, folder)  # onto an empty folder, or where the earlier export was
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise AtatError(f"no space left on the device while writing {folder}", "free some space and export again") from e
        raise AtatError(f"cannot write {folder}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return files


def read_config(folder: Path) -> dict:
    """config.json of an export, checked: every field the loader relies on is there, with its type."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise AtatError(f"{folder} is not a complete atat export: {CONFIG_FILE} is missing", _redo(folder))
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON and bad UTF-8 alike
        raise AtatError(f"corrupt {path} ({type(e).__name__}: {e})", _redo(folder)) from None
    if not isinstance(config, dict) or "atat_format" not in config:
        raise AtatError(f"{path} is not the config of an atat export (no atat_format)",
                        "pass an atat run folder, a checkpoint, or a folder written by `atat export`")
    if config["atat_format"] != FORMAT:
        raise AtatError(f"{path} has atat_format {config['atat_format']!r}; this atat reads format {FORMAT}",
                        "load it with the atat version that wrote it, or export the run again")
    try:
        data, run_config = config["atat_data"], config["atat_run_config"]
        ok = (isinstance(run_config, dict) and isinstance(data, dict) and isinstance(data["name"], str)
              and all(isinstance(x, int) and not isinstance(x, bool)
                      for x in (data["vocab_size"], data["eos_id"], config["atat_step"]))
              and isinstance(data["tokenizer_fingerprint"], str) and config["atat_weights"] in ("ema", "raw"))
        if not ok:
            raise TypeError("a field has the wrong type")
    except (KeyError, TypeError) as e:
        raise AtatError(f"corrupt {path} ({type(e).__name__}: {e})", _redo(folder)) from None
    return config


def read_export(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked config.json and the weights of an export."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise AtatError(f"{folder} is not a complete atat export: {WEIGHTS_FILE} is missing", _redo(folder))
    try:
        weights = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type, and OSError
        raise AtatError(f"corrupt or unreadable {path}: {type(e).__name__}", _redo(folder)) from e
    if not (folder / TOKENIZER_DIR).is_dir():
        raise AtatError(f"{folder} is not a complete atat export: {TOKENIZER_DIR}/ is missing", _redo(folder))
    if tokenizer_fingerprint(folder) != config["atat_data"]["tokenizer_fingerprint"]:
        raise AtatError(f"the tokenizer files in {folder / TOKENIZER_DIR} are not the ones {CONFIG_FILE} records "
                        "(changed or damaged)", _redo(folder))
    return config, weights


def export_files(folder: Path) -> set[str] | None:
    """The files an earlier export in `folder` consists of, or None if `folder` holds something else."""
    folder = Path(folder)
    try:
        read_config(folder)
    except AtatError:
        return None
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    ours = {f for f in files if f in (CONFIG_FILE, WEIGHTS_FILE) or f.startswith(TOKENIZER_DIR + "/")}
    return files if files == ours else None
