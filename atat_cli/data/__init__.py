"""Data: the corpus registry, tokenizers, preparation to memory-mapped token files, batching.

    data = ensure_prepared("pydocs")                  # prepares on first use, then reuses
    loader = BatchLoader(data.blocks("train", 128), batch_size=32, seed=0)
    x = loader.next_batch()                           # (32, 128) int64 token ids
"""

from .loader import BatchLoader
from .prepare import PreparedData, ensure_prepared, prepared_corpora
from .registry import CORPORA, CorpusSpec, get_corpus
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "CORPORA", "CorpusSpec", "get_corpus", "Tokenizer", "load_tokenizer", "ensure_prepared",
    "PreparedData", "BatchLoader", "prepared_corpora",
]
