"""Corpus preparation: documents -> tokenizer -> one flat token stream per split on disk.

Layout of a prepared corpus `<data_root>/<name>/`:

    meta.json        what was prepared and how (tokenizer, dtype, per-split counts, hashes)
    tokenizer/       the tokenizer itself, so runs are reproducible offline
    train.bin        uint16 (uint32 if the vocabulary needs it) token ids, flat
    valid.bin
    test.bin

Documents are concatenated with EOS after every one (MDLM's "wrap"): the model later reads
fixed-length blocks straight out of the memmap, so a block may span document boundaries, and
no padding is ever stored.

Everything is written into `<data_root>/.<name>.tmp-<pid>` and renamed into place only when
complete; since meta.json is the last file written and `<name>/` only ever appears whole, a
crash can leave a stray temp folder behind but never a half-prepared corpus that looks finished.
"""

import hashlib
import json
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from urllib.parse import quote

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import AtatError
from ..paths import data_root
from . import pydocs
from .registry import CORPORA, DEFAULT_BPE_VOCAB, CorpusSpec, get_corpus
from .tokenizer import Tokenizer, load_tokenizer

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1

# Corpora without a valid/test split get ~5% of the documents each, chosen by document hash,
# capped like MDLM's 100k held-out OpenWebText documents (beyond that eval just gets slower).
HELDOUT_FRACTION = 0.05
HELDOUT_MAX_DOCS = 100_000
# Documents per unit of work handed to a tokenizer process.
CHUNK_DOCS = 512
# Below this much text, process start-up costs more than it saves: tokenize in-process.
PARALLEL_MIN_CHARS = 4_000_000
# BPE merges stop improving long before a 40 GB corpus is exhausted; train on a prefix.
BPE_TRAIN_MAX_CHARS = 400_000_000

# Logs and progress go to stderr so stdout stays clean for results and --json (the core does
# not import the CLI package, hence its own console).
_console = Console(stderr=True, soft_wrap=True)


def _log(message: str) -> None:
    _console.print(message, markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------
# Reading a prepared corpus


class PreparedData:
    """A prepared corpus on disk: meta, tokenizer, and memory-mapped token streams per split."""

    def __init__(self, path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        redo = _redo_hint(self.path.name)
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

    def _split_meta(self, split: str) -> dict:
        if split not in self.meta["splits"]:
            raise AtatError(f"unknown split '{split}' in corpus '{self.name}'",
                            hint=f"splits: {', '.join(self.meta['splits'])}")
        return self.meta["splits"][split]

    def tokens(self, split: str) -> np.ndarray:
        """The flat token stream of a split, memory-mapped read-only (nothing is loaded)."""
        n = self._split_meta(split)["tokens"]
        dtype = np.dtype(self.meta["dtype"])
        file = self.path / f"{split}.bin"
        if not file.is_file() or file.stat().st_size != n * dtype.itemsize:
            raise AtatError(f"{file} is missing or does not match meta.json",
                            hint=_redo_hint(self.path.name))
        if n == 0:
            return np.zeros(0, dtype=dtype)  # np.memmap refuses empty files
        return np.memmap(file, dtype=dtype, mode="r", shape=(n,))

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


def _redo_command(name: str) -> str:
    if name in CORPORA:
        return f"atat data fetch {name} --force"
    return f"atat data fetch FILES... --name {name} --force"


def _redo_hint(name: str) -> str:
    return f"prepare it again: {_redo_command(name)}"


def prepared_corpora(root=None) -> list[str]:
    """Names of the finished preparations under the data root (temp folders are hidden)."""
    root = Path(root) if root else data_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / "meta.json").is_file())


# ---------------------------------------------------------------------------------------------
# Preparing


def ensure_prepared(name: str, *, files=None, tokenizer: str | None = None,
                    vocab_size: int | None = None, force: bool = False, progress: bool = True,
                    root=None) -> PreparedData:
    """Prepare corpus `name` (a registered corpus, or `files` under that name) unless done already.

    tokenizer: "bytes", "bpe" or a hub tokenizer name; None means the corpus default, or
    whatever an existing preparation used. vocab_size only applies to "bpe". An existing
    preparation is reused when it matches the requested settings (and, for files, the same
    files); force=True rebuilds it.
    """
    root = Path(root) if root else data_root()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise AtatError(f"invalid corpus name '{name}'",
                        hint="use letters, digits, '.', '_' and '-', e.g. --name mycorpus")
    spec = CORPORA.get(name)
    files = [str(f) for f in files] if files else None
    final = root / name
    if files and spec is not None:
        raise AtatError(f"'{name}' is a registered corpus and cannot name your files",
                        hint="choose another name: --name mycorpus")
    if files is None and spec is None and not (final / "meta.json").is_file():
        get_corpus(name)  # raises "unknown corpus" with the list of known ones
    source = _local_source(files) if files else None

    if (final / "meta.json").is_file() and not force:
        data = PreparedData(final)
        if _settings_match(data.meta, tokenizer, vocab_size, source):
            t = data.meta["tokenizer"]
            _log(f"Reusing prepared '{name}' at {final} (tokenizer {t['name']}, vocab "
                 f"{t['vocab_size']}); to redo it: {_redo_command(name)}")
            return data
        if files is not None or spec is not None:  # (without files we cannot rebuild: below)
            _log(f"Preparing '{name}' again: it was prepared with other settings "
                 f"(tokenizer {data.meta['tokenizer']['name']}, source {data.meta['source']})")
    if files is None and spec is None:
        raise AtatError(f"'{name}' was prepared from local files; pass them again to rebuild it "
                        "(with other settings or --force)",
                        hint=f"atat data fetch FILES... --name {name} --force")

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from an earlier crash
    tmp.mkdir()
    try:
        _prepare_into(tmp, name, spec, files, tokenizer, vocab_size, progress)
        _install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(final)


def _settings_match(meta: dict, tokenizer, vocab_size, source) -> bool:
    """Does an existing preparation satisfy the request? None means "any"."""
    t = meta.get("tokenizer", {})
    if tokenizer is not None and tokenizer != t.get("name"):
        return False
    if vocab_size is not None and vocab_size != t.get("requested_vocab_size"):
        return False
    return source is None or source == meta.get("source")


def _install(tmp: Path, final: Path) -> None:
    """Move a finished preparation into place, replacing an old one only now that it is done."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)  # a directory cannot be os.replace'd onto a non-empty one
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _prepare_into(tmp: Path, name: str, spec: CorpusSpec | None, files, tokenizer, vocab_size,
                  progress: bool) -> dict:
    started = time.time()
    kind = spec.kind if spec else "local"
    tok_name = tokenizer or (spec.default_tokenizer if spec else "bpe")
    if vocab_size is not None and tok_name != "bpe":
        raise AtatError(f"--vocab-size only applies to a trained tokenizer, not '{tok_name}'",
                        hint="add --tokenizer bpe, or drop --vocab-size")
    if tok_name == "bpe":
        vocab_size = vocab_size or (spec.default_vocab_size if spec else None) or DEFAULT_BPE_VOCAB
        tok = None  # trained below, once the documents are read
    else:
        # Load a fixed tokenizer first: an offline machine then fails before any download.
        tok = load_tokenizer(tok_name)

    if kind == "builtin":
        splits = _carve_missing({"train": pydocs.documents()})
        source = pydocs.source()
    elif kind == "hub":
        splits, source = _hub_documents(spec, cache_dir=tmp / "hf-cache")
    else:
        splits = _local_documents(files)
        source = _local_source(files)

    if tok is None:
        _log(f"Training a byte-level BPE tokenizer (vocab {vocab_size}) on the train split...")
        tok = Tokenizer.train_bpe(_bpe_texts(splits["train"]), vocab_size)
        if tok.vocab_size < vocab_size:
            _log(f"Note: the corpus only supports {tok.vocab_size} BPE tokens "
                 f"(asked for {vocab_size}); using {tok.vocab_size}.")
    tok.save(tmp / "tokenizer")
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32)

    split_meta = _tokenize_splits(splits, tmp, tok, dtype, progress)
    shutil.rmtree(tmp / "hf-cache", ignore_errors=True)  # the hub download is not needed again

    content = hashlib.sha256()
    for split in SPLITS:
        content.update(f"{split}:{split_meta[split]['sha256']}\n".encode())
    meta = {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "source": source,
        "tokenizer": {"kind": tok.kind, "name": tok.name, "vocab_size": tok.vocab_size,
                      "eos_id": tok.eos_id,
                      "requested_vocab_size": vocab_size if tok.kind == "bpe" else None},
        "dtype": dtype.name,
        "splits": split_meta,
        "content_hash": content.hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_seconds": round(time.time() - started, 2),
    }
    # meta.json last: its presence is what marks a preparation as finished.
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ---------------------------------------------------------------------------------------------
# Documents


def _local_source(files) -> str:
    return "local: " + ", ".join(str(Path(f).resolve()) for f in files)


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


def _local_documents(files) -> dict:
    """Local text files -> documents per split.

    Either one folder holding train.txt (+ optional valid.txt, test.txt): those are the splits;
    or any number of text files: all their documents, with valid/test carved out by hash.
    In both cases each blank-line separated block of a file is one document.
    """
    paths = [Path(f) for f in files]
    if any(p.is_dir() for p in paths):
        if len(paths) != 1:
            raise AtatError("pass either one folder (with train.txt/valid.txt/test.txt) or "
                            "text files, not both")
        folder = paths[0]
        if not (folder / "train.txt").is_file():
            raise AtatError(f"folder {folder} has no train.txt",
                            hint="a folder needs train.txt (valid.txt and test.txt optional), "
                                 "or pass text files")
        splits = {s: _paragraphs(_read_text(folder / f"{s}.txt"))
                  for s in SPLITS if (folder / f"{s}.txt").exists()}
        return _carve_missing(splits)
    docs = []
    for path in paths:
        docs.extend(_paragraphs(_read_text(path)))
    return _carve_missing({"train": docs})


class _HubTexts:
    """The text column of a (memory-mapped) datasets.Dataset, sliceable like a list."""

    def __init__(self, dataset, field: str):
        self.dataset, self.field = dataset, field

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: slice) -> list[str]:
        return self.dataset[index][self.field]

    def select(self, indices) -> "_HubTexts":
        return _HubTexts(self.dataset.select(indices), self.field)


def hub_root(spec: CorpusSpec) -> str:
    """Where a hub corpus' files live: the hub itself, or a local mirror under $ATAT_HUB_ROOT."""
    local = os.environ.get("ATAT_HUB_ROOT")
    if local:
        return (Path(local) / spec.hub_id).as_posix()
    # hf:// paths need the revision URL-encoded ("refs%2Fconvert%2Fparquet").
    return f"hf://datasets/{spec.hub_id}@{quote(spec.revision, safe='')}"


def _hub_documents(spec: CorpusSpec, cache_dir: Path):
    import datasets

    root = hub_root(spec)
    # Keyed by hub split (loaded once even when two of our splits share it, as lm1b's do);
    # datasets wants \w+ split names, the hub has e.g. "partial-train".
    keys = {hub: re.sub(r"\W", "_", hub) for hub in spec.splits.values()}
    data_files = {keys[hub]: f"{root}/{spec.data_files(hub)}" for hub in keys}
    _log(f"Loading {spec.hub_id} ({spec.config}) from {root} ...")
    try:
        loaded = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(cache_dir))
    except Exception as e:
        raise AtatError(
            f"could not load {spec.hub_id} ({spec.config}) from {root}: {type(e).__name__}: {e}",
            hint="the Hugging Face hub must be reachable (or ATAT_HUB_ROOT point to a local copy); "
                 "offline, use the built-in corpus (pydocs) or your own text files",
        ) from None
    splits = {}
    for ours, hub in spec.splits.items():
        ds = loaded[keys[hub]]
        if spec.text_field not in ds.column_names:
            raise AtatError(f"{spec.hub_id} split '{hub}' has no column '{spec.text_field}'",
                            hint=f"columns: {', '.join(ds.column_names)}")
        splits[ours] = _HubTexts(ds.select_columns([spec.text_field]), spec.text_field)
    return _carve_missing(splits), f"{root} config={spec.config}"


def _doc_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _carve_missing(splits: dict) -> dict:
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
    hashes = np.empty(n, dtype=np.uint64)
    for start in range(0, n, CHUNK_DOCS * 8):
        chunk = train[start:start + CHUNK_DOCS * 8]
        hashes[start:start + len(chunk)] = [_doc_hash(t) for t in chunk]
    order = np.argsort(hashes, kind="stable")  # ties (duplicate docs) keep their file order
    k = min(HELDOUT_MAX_DOCS, max(1, round(n * HELDOUT_FRACTION)))
    result = dict(splits)
    for i, split in enumerate(missing):
        result[split] = _select(train, np.sort(order[i * k:(i + 1) * k]))
    result["train"] = _select(train, np.sort(order[len(missing) * k:]))
    return result


def _select(texts, indices):
    if isinstance(texts, _HubTexts):
        return texts.select(indices)
    return [texts[i] for i in indices]


def _chunks(texts, size: int = CHUNK_DOCS):
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def _bpe_texts(texts):
    """Train-split documents for BPE training, up to BPE_TRAIN_MAX_CHARS of text."""
    seen = 0
    for chunk in _chunks(texts):
        for text in chunk:
            yield text
            seen += len(text)
            if seen >= BPE_TRAIN_MAX_CHARS:
                return


# ---------------------------------------------------------------------------------------------
# Tokenizing (in worker processes for large corpora)

_worker_tokenizer = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _encode_in_worker(texts: list[str]):
    return _encode_chunk(_worker_tokenizer, texts)


def _encode_chunk(tok: Tokenizer, texts: list[str]):
    """Documents -> (token ids with EOS after each document, documents, UTF-8 bytes).

    Whitespace-only documents (e.g. the blank lines of WikiText) are skipped.
    """
    texts = [t for t in texts if t.strip()]
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
    eos = np.array([tok.eos_id], dtype=dtype)
    encoded = [t.encode("utf-8") for t in texts]
    if tok.kind == "bytes":
        # Bytes are their own ids: skip building Python lists (text8 is one 90 MB document).
        pieces = [np.frombuffer(b, dtype=np.uint8).astype(dtype) for b in encoded]
    else:
        pieces = [np.asarray(ids, dtype=dtype) for ids in tok.encode_batch(texts)]
    stream = [part for piece in pieces for part in (piece, eos)]
    ids = np.concatenate(stream) if stream else np.zeros(0, dtype=dtype)
    return ids, len(texts), sum(len(b) for b in encoded)


def _total_chars(splits: dict) -> int | None:
    if any(isinstance(texts, _HubTexts) for texts in splits.values()):
        return None  # unknown without a pass over the data; hub corpora are large anyway
    return sum(len(t) for texts in splits.values() for t in texts)


def _tokenize_splits(splits: dict, tmp: Path, tok: Tokenizer, dtype, progress: bool) -> dict:
    n_workers = min(os.cpu_count() or 1, 4)
    chars = _total_chars(splits)
    parallel = n_workers > 1 and (chars is None or chars >= PARALLEL_MIN_CHARS)
    pool = None
    if parallel:
        import multiprocessing

        # spawn, not fork: the parent may hold Rust (tokenizers) or OpenMP (torch) thread pools,
        # which do not survive a fork. An executor rather than multiprocessing.Pool: when a
        # worker dies it raises BrokenProcessPool, where Pool would respawn it forever.
        pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(str(tmp / "tokenizer"),))

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("docs"), TimeElapsedColumn()]
    result = {}
    try:
        with Progress(*columns, console=_console, disable=not progress) as bar:
            for split in SPLITS:
                texts = splits[split]
                task = bar.add_task(f"tokenizing {split}", total=len(texts))
                sha = hashlib.sha256()
                tokens = documents = utf8_bytes = 0
                with open(tmp / f"{split}.bin", "wb") as f:
                    chunks = _chunks(texts)
                    while True:
                        # A bounded window of chunks at a time: Pool.imap would read the whole
                        # corpus into its task queue up front.
                        window = [c for _, c in zip(range(4 * n_workers), chunks)]
                        if not window:
                            break
                        results = None
                        if pool is not None:
                            try:
                                results = list(pool.map(_encode_in_worker, window))
                            except BrokenProcessPool:
                                # Workers could not start (e.g. a __main__ read from stdin
                                # cannot be re-imported by spawn): carry on in this process.
                                _log("Tokenizer worker processes failed; tokenizing in-process.")
                                pool.shutdown(cancel_futures=True)
                                pool = None
                        if results is None:
                            results = [_encode_chunk(tok, c) for c in window]
                        for chunk, (ids, n_docs, n_bytes) in zip(window, results):
                            data = ids.astype(dtype, copy=False).tobytes()
                            f.write(data)
                            sha.update(data)
                            tokens += len(ids)
                            documents += n_docs
                            utf8_bytes += n_bytes
                            bar.advance(task, len(chunk))
                result[split] = {"tokens": tokens, "documents": documents,
                                 "utf8_bytes": utf8_bytes, "sha256": sha.hexdigest()}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return result
