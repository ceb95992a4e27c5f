"""Tokenizers: raw bytes, a byte-level BPE trained on the corpus, or a Hugging Face hub tokenizer.

All three are small classes behind one interface, `Tokenizer` (`kind`, `name`, `vocab_size`,
`eos_id`, `encode`, `encode_batch`, `decode`, `save`), so the rest of atat never cares which one
it has. Every id is < vocab_size; the model appends its own [MASK] id = vocab_size, so no mask
token is added here.

They are built by `Tokenizer`'s constructors (`bytes`, `train_bpe`, `from_hub`) and loaded by
`load_tokenizer`. A tokenizer is saved next to the prepared data (`<corpus>/tokenizer/`) so that
a run can be reproduced, and sampled from, offline.
"""

import json
import os
import socket
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import AtatError

EOS_TOKEN = "<|endoftext|>"
META_FILE = "atat_tokenizer.json"  # what kind of tokenizer a saved directory holds


class Tokenizer(ABC):
    """What every tokenizer offers; build one with the classmethods below or `load_tokenizer`."""

    kind: str  # "bytes", "bpe" or "hf": recorded in META_FILE and meta.json

    def __init__(self, name: str, vocab_size: int, eos_id: int):
        self.name = name
        self.vocab_size = vocab_size
        self.eos_id = eos_id

    def __repr__(self):
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    # ---- constructors ------------------------------------------------------------------------

    @staticmethod
    def bytes() -> "Tokenizer":
        """UTF-8 bytes 0..255, EOS = 256: no training, nothing to download, never <unk>."""
        return ByteTokenizer()

    @staticmethod
    def train_bpe(texts, vocab_size: int, length: int | None = None) -> "Tokenizer":
        """Train a byte-level BPE (GPT-2 style) on an iterable of texts.

        The byte alphabet is always included, so any text encodes without <unk>; EOS is the
        special token <|endoftext|> (id 0). On a small corpus BPE can run out of pairs to merge
        before reaching vocab_size; the resulting (smaller) vocabulary is then used as is.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise AtatError(
                f"vocab size {vocab_size} is too small for a byte-level BPE",
                hint="use at least 257 (256 bytes + <|endoftext|>), or --tokenizer bytes",
            )
        if vocab_size > 2**32 - 1:
            raise AtatError(f"vocab size {vocab_size} is too large", hint="e.g. --vocab-size 8192")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer, length=length)
        return BPETokenizer(tok)

    @staticmethod
    def from_hub(name: str) -> "Tokenizer":
        """A Hugging Face tokenizer by name, e.g. "gpt2" or "bert-base-uncased".

        EOS is the tokenizer's eos token, or [SEP] for BERT-style tokenizers that have none.
        """
        from transformers import AutoTokenizer

        try:
            # The local cache first: fast, and works offline when the tokenizer was seen before.
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:
            # Without network huggingface_hub retries for ~50 s before failing; probe first.
            _require_hub(name)
            try:
                tok = AutoTokenizer.from_pretrained(name)
            except Exception as e:
                raise AtatError(
                    f"could not load tokenizer '{name}' from the Hugging Face hub: {e}",
                    hint="check the name, or train one on the corpus offline: --tokenizer bpe",
                ) from None
        return Tokenizer._wrap_hf(tok, name)

    @staticmethod
    def _wrap_hf(tok, name: str) -> "Tokenizer":
        """A transformers tokenizer (from the hub or a saved directory) as an atat one."""
        # We feed whole documents; silence the "sequence longer than model_max_length" warning.
        tok.model_max_length = sys.maxsize
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if eos is None:
            raise AtatError(f"tokenizer '{name}' has neither an eos nor a sep token",
                            hint="use --tokenizer bpe or --tokenizer bytes")
        return HubTokenizer(tok, name, eos)

    # ---- encoding ----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    @abstractmethod
    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with no special tokens added."""

    def token_arrays(self, texts: list[str], dtype) -> list[np.ndarray]:
        """Token ids of each text as an array of `dtype`, the form the token files store."""
        return [np.asarray(ids, dtype=dtype) for ids in self.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids])

    @abstractmethod
    def _decode(self, ids: list[int]) -> str:
        """The text of a list of ids (plain ints; numpy or torch integers are converted first)."""

    # ---- persistence -------------------------------------------------------------------------

    def info(self) -> dict:
        """What META_FILE records, and meta.json repeats under "tokenizer"."""
        return {"kind": self.kind, "name": self.name, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id}

    def save(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        (directory / META_FILE).write_text(json.dumps(self.info(), indent=2) + "\n")

    def _save_files(self, directory: Path) -> None:
        """Write what `load` needs besides META_FILE (nothing, unless a subclass has a model)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, info: dict) -> "Tokenizer":
        """The tokenizer saved in `directory`, whose META_FILE holds `info`."""


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes are the ids (0..255); EOS is 256."""

    kind = "bytes"

    def __init__(self):
        super().__init__("bytes", 257, 256)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def token_arrays(self, texts: list[str], dtype) -> list[np.ndarray]:
        # Bytes are their own ids: skip building Python lists (text8 is one 90 MB document).
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(dtype) for t in texts]

    def _decode(self, ids: list[int]) -> str:
        # EOS is shown as <|endoftext|> like the BPE's; ids >= vocab_size (the model's mask id)
        # are not text and are dropped.
        data = bytearray()
        for i in ids:
            if i < 256:
                data.append(i)
            elif i == 256:
                data += EOS_TOKEN.encode()
        return data.decode("utf-8", errors="replace")

    @classmethod
    def load(cls, directory: Path, info: dict) -> "Tokenizer":
        return cls()


class BPETokenizer(Tokenizer):
    """A byte-level BPE trained on the corpus (a `tokenizers.Tokenizer`), EOS <|endoftext|>."""

    kind = "bpe"

    def __init__(self, backend):
        super().__init__("bpe", backend.get_vocab_size(), backend.token_to_id(EOS_TOKEN))
        self._backend = backend

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=False)

    def _save_files(self, directory: Path) -> None:
        self._backend.save(str(directory / "tokenizer.json"))

    @classmethod
    def load(cls, directory: Path, info: dict) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(directory / "tokenizer.json")))


class HubTokenizer(Tokenizer):
    """A transformers tokenizer, from the Hugging Face hub or saved next to a corpus."""

    kind = "hf"

    def __init__(self, backend, name: str, eos_id: int):
        super().__init__(name, len(backend), eos_id)
        self._backend = backend

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._backend(texts, add_special_tokens=False)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids)

    def _save_files(self, directory: Path) -> None:
        self._backend.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path, info: dict) -> "Tokenizer":
        from transformers import AutoTokenizer

        return Tokenizer._wrap_hf(AutoTokenizer.from_pretrained(str(directory)), info["name"])


_KINDS = {cls.kind: cls for cls in (ByteTokenizer, BPETokenizer, HubTokenizer)}


def load_tokenizer(directory_or_name) -> Tokenizer:
    """A tokenizer saved with `Tokenizer.save`, or one by name: "bytes" or a hub name."""
    path = Path(directory_or_name)
    if (path / META_FILE).is_file():
        info = json.loads((path / META_FILE).read_text())
        if info["kind"] not in _KINDS:
            raise AtatError(f"{path} holds a tokenizer of unknown kind '{info['kind']}'",
                            hint=f"kinds: {', '.join(_KINDS)}")
        return _KINDS[info["kind"]].load(path, info)
    name = str(directory_or_name)
    if name == "bytes":
        return Tokenizer.bytes()
    if name == "bpe":
        raise AtatError("a bpe tokenizer is trained per corpus and cannot be loaded by name",
                        hint="prepare a corpus with it: atat data fetch pydocs --tokenizer bpe")
    if path.exists():
        raise AtatError(f"{path} is not a saved atat tokenizer (no {META_FILE})")
    return Tokenizer.from_hub(name)


def _require_hub(name: str) -> None:
    """Fail fast with a clear message when the Hugging Face hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        host = urlparse(endpoint).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=5).close()
            return
        except OSError as e:
            reason = f"{host} is unreachable ({e})"
    raise AtatError(
        f"cannot load tokenizer '{name}': the Hugging Face hub is not available ({reason})",
        hint="offline, train a tokenizer on the corpus: --tokenizer bpe (or --tokenizer bytes)",
    )
