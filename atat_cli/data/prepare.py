"""Corpus preparation: documents -> tokenizer -> one flat token stream per split on disk.

`ensure_prepared` decides whether what is on disk (see prepared.py for the layout) can be
reused; if not, it reads the documents (sources.py), loads or trains the tokenizer, tokenizes
(tokenize.py) and writes meta.json.

Everything is written into `<data_root>/.<name>.tmp-<pid>` and renamed into place only when
complete; since meta.json is the last file written and `<name>/` only ever appears whole, a
crash can leave a stray temp folder behind but never a half-prepared corpus that looks finished.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from ..errors import AtatError
from ..paths import data_root
from .console import log
from .prepared import PreparedData, check_name, redo_command
from .registry import CORPORA, DEFAULT_BPE_VOCAB, SPLITS, get_corpus
from .sources import DocumentSource, LocalFiles, corpus_source, each_text
from .tokenize import token_dtype, tokenize_splits
from .tokenizer import Tokenizer, load_tokenizer

FORMAT_VERSION = 1
# BPE merges stop improving long before a 40 GB corpus is exhausted; train on a prefix.
BPE_TRAIN_MAX_CHARS = 400_000_000


def ensure_prepared(name: str, *, files=None, tokenizer: str | None = None,
                    vocab_size: int | None = None, force: bool = False, progress: bool = True,
                    root=None) -> PreparedData:
    """Prepare corpus `name` (a registered corpus, or `files` under that name) unless done already.

    tokenizer: "bytes", "bpe" or a hub tokenizer name; None means the corpus default, or
    whatever an existing preparation used. vocab_size only applies to "bpe". An existing
    preparation is reused when it matches the requested settings (and, for files, the same
    files) and is never replaced by one with other settings unless force=True.
    """
    check_name(name)
    spec = CORPORA.get(name)
    trains_bpe = tokenizer == "bpe" or (tokenizer is None and (spec is None or spec.default_tokenizer == "bpe"))
    if vocab_size is not None and vocab_size < 257 and trains_bpe:  # fail before any work starts
        raise AtatError(f"vocab size {vocab_size} is too small for a byte-level BPE",
                        "use at least 257 (256 bytes + <|endoftext|>), or --tokenizer bytes")
    root = Path(root) if root else data_root()
    final = root / name
    prepared = (final / "meta.json").is_file()
    source = _requested_source(name, files, prepared)
    existing = PreparedData(final) if prepared and not force else None
    if existing is not None and _settings_match(existing.meta, tokenizer, vocab_size, source):
        t = existing.meta["tokenizer"]
        log(f"Reusing prepared '{name}' at {final} (tokenizer {t['name']}, vocab "
            f"{t['vocab_size']}); to redo it: {redo_command(name)}")
        return existing
    if source is None:
        raise AtatError(f"'{name}' was prepared from local files; pass them again to rebuild it "
                        "(with other settings or --force)", hint=redo_command(name))
    if existing is not None:  # replacing it would pull the data out from under its runs
        t = existing.meta["tokenizer"]
        raise AtatError(f"'{name}' is already prepared with other settings (tokenizer {t['name']}, vocab "
                        f"{t['vocab_size']}); preparing it again would replace "
                        "the data its runs were trained on",
                        f"to replace it: {redo_command(name).replace(' --force', '')} with the new settings and "
                        "--force (runs trained on the old preparation will then refuse to load)")
    return _prepare_in_place(root, name, source, tokenizer, vocab_size, progress)


def require_known_corpus(name: str) -> None:
    """Fail now, before any work, on a corpus name that is neither registered nor prepared (the
    error `ensure_prepared` would give later, after a grid had started logging)."""
    check_name(name)
    if name not in CORPORA and not (data_root() / name / "meta.json").is_file():
        get_corpus(name)  # raises "unknown corpus" with the list of known ones


def _requested_source(name: str, files, prepared: bool) -> DocumentSource | None:
    """What `name` is to be prepared from: the files given, or the registered corpus.

    None when neither: then only the existing preparation (made from files not given now) can
    serve; without one, `name` is an unknown corpus.
    """
    spec = CORPORA.get(name)
    if files and spec is not None:
        raise AtatError(f"'{name}' is a registered corpus and cannot name your files",
                        hint="choose another name: --name mycorpus")
    if files:
        return LocalFiles(files)
    if spec is not None:
        return corpus_source(spec)
    if not prepared:
        get_corpus(name)  # raises "unknown corpus" with the list of known ones
    return None


def _settings_match(meta: dict, tokenizer, vocab_size, source: DocumentSource | None) -> bool:
    """Does an existing preparation satisfy the request? None means "any"."""
    t = meta.get("tokenizer", {})
    if tokenizer is not None and tokenizer != t.get("name"):
        return False
    if vocab_size is not None and vocab_size != t.get("requested_vocab_size"):
        return False
    return source is None or source.matches(meta.get("source"))


def _prepare_in_place(root: Path, name: str, source: DocumentSource, tokenizer, vocab_size,
                      progress: bool) -> PreparedData:
    """Prepare into a temp folder, then move it to `<root>/<name>` (replacing an old one)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from an earlier crash
    tmp.mkdir()
    try:
        _prepare_into(tmp, name, source, tokenizer, vocab_size, progress)
        _install(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(root / name)


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


def _prepare_into(folder: Path, name: str, source: DocumentSource, tokenizer, vocab_size,
                  progress: bool) -> None:
    started = time.time()
    tok_name = tokenizer or source.default_tokenizer
    if vocab_size is not None and tok_name != "bpe":
        raise AtatError(f"--vocab-size only applies to a trained tokenizer, not '{tok_name}'",
                        hint="add --tokenizer bpe, or drop --vocab-size")
    if tok_name == "bpe":
        vocab_size = vocab_size or source.default_vocab_size or DEFAULT_BPE_VOCAB
        tok = None  # trained below, once the documents are read
    else:
        # Load a fixed tokenizer first: an offline machine then fails before any download.
        tok = load_tokenizer(tok_name)

    splits = source.documents(scratch=folder / "hf-cache")
    if tok is None:
        tok = _train_bpe(splits["train"], vocab_size)
    tok.save(folder / "tokenizer")
    split_meta = tokenize_splits(splits, folder, tok, progress)
    shutil.rmtree(folder / "hf-cache", ignore_errors=True)  # the hub download is not needed again

    meta = {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": source.kind,
        "source": source.describe(),
        **source.extra_meta(),  # e.g. synthetic's "entropy_floor"
        # vocab_size is None unless a bpe was requested (checked above).
        "tokenizer": {**tok.info(), "requested_vocab_size": vocab_size},
        "dtype": token_dtype(tok.vocab_size).name,
        "splits": split_meta,
        "content_hash": _content_hash(split_meta),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_seconds": round(time.time() - started, 2),
    }
    # meta.json last: its presence is what marks a preparation as finished.
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _train_bpe(train, vocab_size: int) -> Tokenizer:
    log(f"Training a byte-level BPE tokenizer (vocab {vocab_size}) on the train split...")
    tok = Tokenizer.train_bpe(_bpe_texts(train), vocab_size)
    if tok.vocab_size < vocab_size:
        log(f"Note: the corpus only supports {tok.vocab_size} BPE tokens "
            f"(asked for {vocab_size}); using {tok.vocab_size}.")
    return tok


def _bpe_texts(texts):
    """Train-split documents for BPE training, up to BPE_TRAIN_MAX_CHARS of text."""
    seen = 0
    for text in each_text(texts):
        yield text
        seen += len(text)
        if seen >= BPE_TRAIN_MAX_CHARS:
            return


def _content_hash(split_meta: dict) -> str:
    """One hash over the token files of all splits (each already hashed while written)."""
    content = hashlib.sha256()
    for split in SPLITS:
        content.update(f"{split}:{split_meta[split]['sha256']}\n".encode())
    return content.hexdigest()
