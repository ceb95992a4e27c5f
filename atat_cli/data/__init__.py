"""Data: the corpus registry, tokenizers, preparation to memory-mapped token files, batching.

    data = ensure_prepared("pydocs")                  # prepares on first use, then reuses
    loader = BatchLoader(data.blocks("train", 128), batch_size=32, seed=0)
    x = loader.next_batch()                           # (32, 128) int64 token ids

One module per job: registry.py (the named corpora), sources.py (reading documents: local files,
pydocs.py, synthetic.py (a Markov source with a known entropy floor), the hub; carving held-out
splits), tokenizer.py (the tokenizers), tokenize.py (documents -> token files), prepare.py
(`ensure_prepared`: reuse or build), prepared.py (reading a prepared corpus), loader.py
(batches), console.py (logs and progress on stderr).
"""

from .loader import BatchLoader
from .prepare import ensure_prepared, require_known_corpus
from .prepared import PreparedData, open_prepared, prepared_corpora, tokenizer_fingerprint
from .registry import CORPORA, CorpusSpec, get_corpus
from .synthetic import MarkovSource
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "CORPORA", "CorpusSpec", "get_corpus", "Tokenizer", "load_tokenizer", "ensure_prepared", "require_known_corpus",
    "PreparedData", "BatchLoader", "open_prepared", "prepared_corpora", "MarkovSource", "tokenizer_fingerprint",
]
