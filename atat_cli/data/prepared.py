"""Reading a prepared corpus: its meta, its tokenizer and its memory-mapped token streams.

Layout of a prepared corpus `<data_root>/<name>/`:

    meta.json        what was prepared and how (tokenizer, dtype, per-split counts, hashes)
    tokenizer/       the tokenizer itself, so runs are reproducible offline
    train.bin        uint16 (uint32 if the vocabulary needs it) token ids, flat
    valid.bin
    test.bin

meta.json is written last (see prepare.py), so a folder with one is a finished preparation.
"""

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from ..errors import AtatError
from ..paths import data_root
from .registry import CORPORA
from .tokenizer import Tokenizer, load_tokenizer


class PreparedData:
    """A prepared corpus on disk: meta, tokenizer, and memory-mapped token streams per split."""

    def __init__(self, path):
        self.path = Path(path)
        self._ids_checked: set[str] = set()
        meta_path = self.path / "meta.json"
        redo = redo_hint(self.path.name)
        if not meta_path.is_file():
            raise AtatError(f"no prepared data at {self.path} (meta.json is missing)", hint=redo)
        try:
            self.meta = json.loads(meta_path.read_text())
            # Check every field the rest of atat relies on, so damage shows up here, once.
            t, splits = self.meta["tokenizer"], self.meta["splits"]
            numbers = [t["vocab_size"], t["eos_id"]]
            numbers += [s[k] for s in splits.values() for k in ("tokens", "utf8_bytes")]
            if not isinstance(self.meta["name"], str) or not all(isinstance(x, int)
                                                                 for x in numbers):
                raise TypeError("a count or the name has the wrong type")
            np.dtype(self.meta["dtype"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise AtatError(f"corrupt {meta_path} ({type(e).__name__}: {e})", hint=redo) from None
        for split in self.meta["splits"]:  # a truncated or missing token file is damage too
            self._token_file(split)

    def __repr__(self):
        return f"PreparedData({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def vocab_size(self) -> int:
        return self.meta["tokenizer"]["vocab_size"]

    @property
    def eos_id(self) -> int:
        return self.meta["tokenizer"]["eos_id"]

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / "tokenizer")

    @functools.cached_property
    def tokenizer_fingerprint(self) -> str:
        return tokenizer_fingerprint(self.path)

    def _split_meta(self, split: str) -> dict:
        if split not in self.meta["splits"]:
            raise AtatError(f"unknown split '{split}' in corpus '{self.name}'",
                            hint=f"splits: {', '.join(self.meta['splits'])}")
        return self.meta["splits"][split]

    def _token_file(self, split: str) -> Path:
        """The split's token file, checked against the count in meta.json."""
        n = self._split_meta(split)["tokens"]
        file = self.path / f"{split}.bin"
        if not file.is_file() or file.stat().st_size != n * np.dtype(self.meta["dtype"]).itemsize:
            raise AtatError(f"{file} is missing or does not match meta.json",
                            hint=redo_hint(self.path.name))
        return file

    def tokens(self, split: str) -> np.ndarray:
        """The flat token stream of a split, memory-mapped read-only (nothing is loaded)."""
        n = self._split_meta(split)["tokens"]
        dtype = np.dtype(self.meta["dtype"])
        file = self._token_file(split)
        if n == 0:
            return np.zeros(0, dtype=dtype)  # np.memmap refuses empty files
        tokens = np.memmap(file, dtype=dtype, mode="r", shape=(n,))
        if split not in self._ids_checked:  # once per split: a damaged id would index past the embedding
            top = int(tokens.max())
            if top >= self.vocab_size:
                raise AtatError(f"{file} holds token id {top}, outside the vocabulary of {self.vocab_size}: "
                                "the file is damaged", hint=redo_hint(self.path.name))
            self._ids_checked.add(split)
        return tokens

    def blocks(self, split: str, seq_len: int) -> np.ndarray:
        """(n_tokens // seq_len, seq_len) view over the memmap; the remainder is dropped."""
        if seq_len < 1:
            raise AtatError(f"sequence length must be positive, got {seq_len}")
        tokens = self.tokens(split)
        n = len(tokens) // seq_len
        return tokens[: n * seq_len].reshape(n, seq_len)

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of text per stored token (EOS included): turns nats/token into bits/byte."""
        meta = self._split_meta(split)
        return meta["utf8_bytes"] / max(meta["tokens"], 1)


def tokenizer_fingerprint(folder) -> str:
    """sha256 of the tokenizer saved in `folder`/tokenizer/ (a prepared corpus, or an exported
    model): two byte-level BPEs of the same size trained on different text have the same
    meta.json entry but different fingerprints."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted((folder / "tokenizer").rglob("*")):
        if file.is_file():
            digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def redo_command(name: str) -> str:
    """The command that prepares corpus `name` again."""
    if name in CORPORA:
        return f"atat data fetch {name} --force"
    return f"atat data fetch FILES... --name {name} --force"


def check_name(name: str) -> None:
    """A corpus name is a folder name under the data root: no paths, no hidden folders."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise AtatError(f"invalid corpus name '{name}'",
                        hint="use letters, digits, '.', '_' and '-', e.g. --name mycorpus")


def open_prepared(name: str) -> PreparedData:
    """The prepared corpus of that name under the data root, validated (what `atat data info` shows)."""
    check_name(name)
    path = data_root() / name
    if not (path / "meta.json").is_file():
        raise AtatError(f"corpus '{name}' is not prepared (nothing at {path})", hint=f"atat data fetch {name}")
    return PreparedData(path)


def redo_hint(name: str) -> str:
    return f"prepare it again: {redo_command(name)}"


def prepared_corpora(root=None) -> list[str]:
    """Names of the finished preparations under the data root (temp folders are hidden)."""
    root = Path(root) if root else data_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / "meta.json").is_file())
