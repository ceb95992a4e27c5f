"""Document sources: where the documents of a corpus come from, read into splits.

A source is what a corpus is prepared from: the user's text files (`LocalFiles`), a built-in
corpus (`PydocsCorpus`, `SyntheticCorpus`) or a hub corpus read as parquet (`HubCorpus`). Each
one says what kind of corpus it is, which tokenizer suits it by default, how meta.json names it
(and what else meta.json records about it, such as a known entropy floor), and reads its
documents as `{"train": texts, "valid": texts, "test": texts}`, where texts is a list of
strings or, for a hub corpus, a memory-mapped column that slices like one.

A corpus without a valid or test split gets them carved out of train (`carve_missing`).
"""

import hashlib
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import AtatError
from . import pydocs, synthetic
from .console import log
from .registry import SPLITS, CorpusSpec

# Corpora without a valid/test split get ~5% of the documents each, chosen by document hash,
# capped like MDLM's 100k held-out OpenWebText documents (beyond that eval just gets slower).
HELDOUT_FRACTION = 0.05
HELDOUT_MAX_DOCS = 100_000
# Documents read at a time when going through texts one by one: a hub column is read a slice
# at a time, and one Arrow read per document would be slow.
READ_DOCS = 4096


class DocumentSource(ABC):
    """Where a corpus' documents come from, and what its preparation records about that."""

    kind: str  # meta.json "kind": "builtin", "hub" or "local"
    default_tokenizer: str  # when the request names none
    default_vocab_size: int | None  # of a trained (bpe) tokenizer; None: DEFAULT_BPE_VOCAB

    @abstractmethod
    def describe(self) -> str:
        """Where the documents come from, as meta.json's "source" records it."""

    @abstractmethod
    def matches(self, recorded: str) -> bool:
        """Can a preparation whose meta.json records `recorded` as its source be reused?"""

    @abstractmethod
    def documents(self, scratch: Path) -> dict:
        """The documents per split; `scratch` is a folder for downloads, kept until tokenized."""

    def extra_meta(self) -> dict:
        """Fields meta.json records about the documents beyond their source; none by default."""
        return {}


# ---------------------------------------------------------------------------------------------
# Local files


class LocalFiles(DocumentSource):
    """Local text files, in which each blank-line separated block is one document.

    Either one folder holding train.txt (+ optional valid.txt, test.txt): those are the splits;
    or any number of text files: all their documents, with valid/test carved out by hash.
    """

    kind = "local"
    default_tokenizer = "bpe"  # nothing is known about the text: train a tokenizer on it
    default_vocab_size = None

    def __init__(self, files):
        self.paths = [Path(f) for f in files]

    def describe(self) -> str:
        return "local: " + ", ".join(str(p.resolve()) for p in self.paths)

    def matches(self, recorded: str) -> bool:
        return recorded == self.describe()  # the same files, wherever they were named from

    def documents(self, scratch: Path) -> dict:
        if not any(p.is_dir() for p in self.paths):
            docs = []
            for path in self.paths:
                docs.extend(_paragraphs(_read_text(path)))
            return carve_missing({"train": docs})
        if len(self.paths) != 1:
            raise AtatError("pass either one folder (with train.txt/valid.txt/test.txt) or "
                            "text files, not both")
        folder = self.paths[0]
        if not (folder / "train.txt").is_file():
            raise AtatError(f"folder {folder} has no train.txt",
                            hint="a folder needs train.txt (valid.txt and test.txt optional), "
                                 "or pass text files")
        splits = {s: _paragraphs(_read_text(folder / f"{s}.txt"))
                  for s in SPLITS if (folder / f"{s}.txt").exists()}
        return carve_missing(splits)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise AtatError(f"file not found: {path}")
    if not path.is_file():
        raise AtatError(f"not a regular file: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: drop a BOM if there is one
    except UnicodeDecodeError as e:
        raise AtatError(f"{path} is not UTF-8 text (invalid byte at offset {e.start})",
                        hint=f"convert it first, e.g. iconv -f latin1 -t utf-8 {path}") from None
    if not text.strip():
        raise AtatError(f"{path} is empty")
    return text


def _paragraphs(text: str) -> list[str]:
    """Documents of a text file: blocks separated by blank lines (a file with none is one doc)."""
    return [doc.strip() for doc in re.split(r"\n\s*\n", text) if doc.strip()]


# ---------------------------------------------------------------------------------------------
# Registered corpora


class RegisteredCorpus(DocumentSource):
    """A corpus of the registry: its spec says its kind and default tokenizer."""

    def __init__(self, spec: CorpusSpec):
        self.spec = spec
        self.kind = spec.kind
        self.default_tokenizer = spec.default_tokenizer
        self.default_vocab_size = spec.default_vocab_size

    def matches(self, recorded: str) -> bool:
        # Known by its name: the same corpus under another Python version (pydocs) or read from
        # another mirror (ATAT_HUB_ROOT) is not prepared again.
        return True


class PydocsCorpus(RegisteredCorpus):
    """The built-in offline corpus (see pydocs.py); valid/test are carved out of it."""

    def describe(self) -> str:
        return pydocs.source()

    def documents(self, scratch: Path) -> dict:
        return carve_missing({"train": pydocs.documents()})


class SyntheticCorpus(RegisteredCorpus):
    """The built-in Markov source with a known entropy floor (see synthetic.py), made here."""

    def describe(self) -> str:
        return synthetic.describe()

    def matches(self, recorded: str) -> bool:
        # Generated, not read: a preparation from other generator settings has another floor.
        return recorded == self.describe()

    def documents(self, scratch: Path) -> dict:
        return synthetic.documents()

    def extra_meta(self) -> dict:
        return {"entropy_floor": synthetic.entropy_floor()}


class HubCorpus(RegisteredCorpus):
    """A hub corpus, read as parquet files through `datasets` (memory-mapped, not in RAM)."""

    def root(self) -> str:
        """Where the corpus' files live: the hub itself, or a local mirror under $ATAT_HUB_ROOT."""
        local = os.environ.get("ATAT_HUB_ROOT")
        if local:
            return (Path(local) / self.spec.hub_id).as_posix()
        # hf:// paths need the revision URL-encoded ("refs%2Fconvert%2Fparquet").
        return f"hf://datasets/{self.spec.hub_id}@{quote(self.spec.revision, safe='')}"

    def describe(self) -> str:
        return f"{self.root()} config={self.spec.config}"

    def documents(self, scratch: Path) -> dict:
        import datasets

        spec, root = self.spec, self.root()
        # Keyed by hub split (loaded once even when two of our splits share it, as lm1b's do);
        # datasets wants \w+ split names, the hub has e.g. "partial-train".
        keys = {hub: re.sub(r"\W", "_", hub) for hub in spec.splits.values()}
        data_files = {keys[hub]: f"{root}/{spec.data_files(hub)}" for hub in keys}
        log(f"Loading {spec.hub_id} ({spec.config}) from {root} ...")
        try:
            loaded = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(scratch))
        except Exception as e:
            raise AtatError(
                f"could not load {spec.hub_id} ({spec.config}) from {root}: {type(e).__name__}: {e}",
                hint="the Hugging Face hub must be reachable (or ATAT_HUB_ROOT point to a local "
                     "copy); offline, use the built-in corpus (pydocs) or your own text files",
            ) from None
        splits = {}
        for ours, hub in spec.splits.items():
            ds = loaded[keys[hub]]
            if spec.text_field not in ds.column_names:
                raise AtatError(f"{spec.hub_id} split '{hub}' has no column '{spec.text_field}'",
                                hint=f"columns: {', '.join(ds.column_names)}")
            splits[ours] = HubTexts(ds.select_columns([spec.text_field]), spec.text_field)
        return carve_missing(splits)


class HubTexts:
    """The text column of a (memory-mapped) datasets.Dataset, sliceable like a list."""

    def __init__(self, dataset, field: str):
        self.dataset, self.field = dataset, field

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: slice) -> list[str]:
        return self.dataset[index][self.field]

    def select(self, indices) -> "HubTexts":
        return HubTexts(self.dataset.select(indices), self.field)


BUILTIN_SOURCES = {"pydocs": PydocsCorpus, "synthetic": SyntheticCorpus}


def corpus_source(spec: CorpusSpec) -> RegisteredCorpus:
    """The source of a registered corpus: the hub, or one of the builtins."""
    return HubCorpus(spec) if spec.kind == "hub" else BUILTIN_SOURCES[spec.name](spec)


# ---------------------------------------------------------------------------------------------
# Going through documents


def chunks(texts, size: int):
    """Consecutive slices of `size` documents (the last one shorter)."""
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def each_text(texts):
    """The documents one at a time, read READ_DOCS at a time."""
    for chunk in chunks(texts, READ_DOCS):
        yield from chunk


def total_chars(splits: dict) -> int | None:
    """Characters of text in all splits; None for a hub corpus."""
    if any(isinstance(texts, HubTexts) for texts in splits.values()):
        return None  # unknown without a pass over the data; hub corpora are large anyway
    return sum(len(t) for texts in splits.values() for t in texts)


# ---------------------------------------------------------------------------------------------
# Carving held-out splits


def carve_missing(splits: dict) -> dict:
    """Fill in missing valid/test splits with documents taken out of train, chosen by hash.

    Documents are ordered by a hash of their text (so the choice does not depend on file order
    and is the same on every machine); the first ~5% go to valid, the next ~5% to test. Each
    carved split gets at least one document, so with >= 3 documents none is empty.
    """
    missing = [s for s in SPLITS if s not in splits]
    if not missing:
        return splits
    train = splits["train"]
    n = len(train)
    if n < len(missing) + 1:
        raise AtatError(
            f"only {n} document(s): too few to hold out {' and '.join(missing)} splits",
            hint="separate documents with blank lines, add text, or give a folder with "
                 "train.txt/valid.txt/test.txt",
        )
    hashes = np.fromiter((_doc_hash(t) for t in each_text(train)), dtype=np.uint64, count=n)
    order = np.argsort(hashes, kind="stable")  # ties (duplicate docs) keep their file order
    k = min(HELDOUT_MAX_DOCS, max(1, round(n * HELDOUT_FRACTION)))
    result = dict(splits)
    for i, split in enumerate(missing):
        result[split] = _select(train, np.sort(order[i * k:(i + 1) * k]))
    result["train"] = _select(train, np.sort(order[len(missing) * k:]))
    return result


def _doc_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _select(texts, indices):
    if isinstance(texts, HubTexts):
        return texts.select(indices)
    return [texts[i] for i in indices]
