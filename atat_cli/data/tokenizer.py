"""Tokenizers: raw bytes, a byte-level BPE trained on the corpus, or a Hugging Face hub tokenizer.

All three share one small interface (`name`, `vocab_size`, `eos_id`, `encode`, `encode_batch`,
`decode`, `save`) so the rest of atat never cares which one it has. Every id is < vocab_size;
the model appends its own [MASK] id = vocab_size, so no mask token is added here.

A tokenizer is saved next to the prepared data (`<corpus>/tokenizer/`) so that a run can be
reproduced, and sampled from, offline.
"""

import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..errors import AtatError

EOS_TOKEN = "<|endoftext|>"
META_FILE = "atat_tokenizer.json"  # what kind of tokenizer a saved directory holds


class Tokenizer:
    """One tokenizer of kind "bytes", "bpe" or "hf"; build it with the classmethods below."""

    def __init__(self, kind: str, name: str, vocab_size: int, eos_id: int, backend=None):
        self.kind = kind
        self.name = name
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self._backend = backend  # tokenizers.Tokenizer (bpe), transformers tokenizer (hf), None

    def __repr__(self):
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    # ---- constructors ------------------------------------------------------------------------

    @classmethod
    def bytes(cls) -> "Tokenizer":
        """UTF-8 bytes 0..255, EOS = 256: no training, nothing to download, never <unk>."""
        return cls("bytes", "bytes", 257, 256)

    @classmethod
    def train_bpe(cls, texts, vocab_size: int, length: int | None = None) -> "Tokenizer":
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
        return cls("bpe", "bpe", tok.get_vocab_size(), tok.token_to_id(EOS_TOKEN), tok)

    @classmethod
    def from_hub(cls, name: str) -> "Tokenizer":
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
        return cls._wrap_hf(tok, name)

    @classmethod
    def _wrap_hf(cls, tok, name: str) -> "Tokenizer":
        # We feed whole documents; silence the "sequence longer than model_max_length" warning.
        tok.model_max_length = sys.maxsize
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if eos is None:
            raise AtatError(f"tokenizer '{name}' has neither an eos nor a sep token",
                            hint="use --tokenizer bpe or --tokenizer bytes")
        return cls("hf", name, len(tok), eos, tok)

    # ---- encoding ----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "bytes":
            return [list(t.encode("utf-8")) for t in texts]
        if self.kind == "bpe":
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        return self._backend(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "bytes":
            # EOS is shown as <|endoftext|> like the BPE's; ids >= vocab_size (the model's
            # mask id) are not text and are dropped.
            data = bytearray()
            for i in ids:
                if i < 256:
                    data.append(i)
                elif i == 256:
                    data += EOS_TOKEN.encode()
            return data.decode("utf-8", errors="replace")
        if self.kind == "bpe":
            return self._backend.decode(ids, skip_special_tokens=False)
        return self._backend.decode(ids)

    # ---- persistence -------------------------------------------------------------------------

    def save(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "bpe":
            self._backend.save(str(directory / "tokenizer.json"))
        elif self.kind == "hf":
            self._backend.save_pretrained(str(directory))
        info = {"kind": self.kind, "name": self.name, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id}
        (directory / META_FILE).write_text(json.dumps(info, indent=2) + "\n")


def load_tokenizer(directory_or_name) -> Tokenizer:
    """A tokenizer saved with `Tokenizer.save`, or one by name: "bytes" or a hub name."""
    path = Path(directory_or_name)
    if (path / META_FILE).is_file():
        info = json.loads((path / META_FILE).read_text())
        if info["kind"] == "bytes":
            return Tokenizer.bytes()
        if info["kind"] == "bpe":
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(str(path / "tokenizer.json"))
            return Tokenizer("bpe", info["name"], info["vocab_size"], info["eos_id"], backend)
        from transformers import AutoTokenizer

        return Tokenizer._wrap_hf(AutoTokenizer.from_pretrained(str(path)), info["name"])
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
