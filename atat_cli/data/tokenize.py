"""Tokenizing documents into the flat token files of a prepared corpus (in parallel when large).

Documents are concatenated with EOS after every one (MDLM's "wrap"): the model later reads
fixed-length blocks straight out of the memmap, so a block may span document boundaries, and
no padding is ever stored. Whitespace-only documents (e.g. the blank lines of WikiText) are
skipped.

A large corpus is tokenized by a pool of worker processes, a bounded window of chunks at a time,
and written in document order: the files are the same whichever way they were made.
"""

import hashlib
import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .console import console, log
from .registry import SPLITS
from .sources import chunks, total_chars
from .tokenizer import Tokenizer, load_tokenizer

# Documents per unit of work handed to a tokenizer process.
CHUNK_DOCS = 512
# Below this much text, process start-up costs more than it saves: tokenize in-process.
PARALLEL_MIN_CHARS = 4_000_000
MAX_WORKERS = 4


def token_dtype(vocab_size: int) -> np.dtype:
    """What the token files store: uint16 ids when the vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_documents(tok: Tokenizer, texts: list[str]):
    """Documents -> (token ids with EOS after each document, documents, UTF-8 bytes)."""
    texts = [t for t in texts if t.strip()]
    dtype = token_dtype(tok.vocab_size)
    eos = np.array([tok.eos_id], dtype=dtype)
    stream = [part for ids in tok.token_arrays(texts, dtype) for part in (ids, eos)]
    ids = np.concatenate(stream) if stream else np.zeros(0, dtype=dtype)
    return ids, len(texts), sum(len(t.encode("utf-8")) for t in texts)


def tokenize_splits(splits: dict, folder: Path, tok: Tokenizer, progress: bool) -> dict:
    """Write `<folder>/<split>.bin` for every split; returns the per-split counts and hashes.

    Worker processes load the tokenizer saved in `<folder>/tokenizer`.
    """
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    chars = total_chars(splits)
    parallel = workers > 1 and (chars is None or chars >= PARALLEL_MIN_CHARS)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("docs"), TimeElapsedColumn()]
    with (_Encoder(tok, folder / "tokenizer", workers if parallel else 0) as encoder,
          Progress(*columns, console=console, disable=not progress) as bar):
        return {split: _write_split(folder / f"{split}.bin", splits[split], encoder, bar,
                                    window=4 * workers)
                for split in SPLITS}


def _write_split(path: Path, texts, encoder: "_Encoder", bar: Progress, window: int) -> dict:
    task = bar.add_task(f"tokenizing {path.stem}", total=len(texts))
    sha = hashlib.sha256()
    tokens = documents = utf8_bytes = 0
    pending = chunks(texts, CHUNK_DOCS)
    with open(path, "wb") as f:
        # A bounded window of chunks at a time: Pool.imap would read the whole corpus into its
        # task queue up front.
        while batch := list(itertools.islice(pending, window)):
            for chunk, (ids, n_docs, n_bytes) in zip(batch, encoder.encode(batch)):
                data = ids.tobytes()
                f.write(data)
                sha.update(data)
                tokens += len(ids)
                documents += n_docs
                utf8_bytes += n_bytes
                bar.advance(task, len(chunk))
    return {"tokens": tokens, "documents": documents, "utf8_bytes": utf8_bytes,
            "sha256": sha.hexdigest()}


class _Encoder:
    """Encodes chunks of documents in worker processes, or in this one when there are none."""

    def __init__(self, tok: Tokenizer, tokenizer_dir: Path, workers: int):
        self.tok = tok
        self.pool = None
        if workers:
            import multiprocessing

            # spawn, not fork: the parent may hold Rust (tokenizers) or OpenMP (torch) thread
            # pools, which do not survive a fork. An executor rather than multiprocessing.Pool:
            # when a worker dies it raises BrokenProcessPool, where Pool would respawn it forever.
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(str(tokenizer_dir),))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def encode(self, batch: list) -> list:
        """`encode_documents` of every chunk in `batch`, in order."""
        if self.pool is not None:
            try:
                return list(self.pool.map(_encode_in_worker, batch))
            except BrokenProcessPool:
                # Workers could not start (e.g. a __main__ read from stdin cannot be re-imported
                # by spawn): carry on in this process.
                log("Tokenizer worker processes failed; tokenizing in-process.")
                self.close()
        return [encode_documents(self.tok, chunk) for chunk in batch]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


# The tokenizer of a worker process, loaded once when the process starts.
_worker_tokenizer = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _encode_in_worker(texts: list[str]):
    return encode_documents(_worker_tokenizer, texts)
