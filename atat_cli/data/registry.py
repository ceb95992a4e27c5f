"""The one place that lists the named corpora `atat` knows how to fetch.

Hub corpora are read as plain parquet files (never a loading script, never trust_remote_code),
pinned to a revision. Most use the hub's automatic parquet conversion branch
`refs/convert/parquet`, whose layout is `{config}/{split}/*.parquet` whatever format the dataset
was uploaded in, so one loading path serves them all.

Our split names are `SPLITS`: `train`, `valid`, `test`. `splits` maps ours to the hub's; a split
missing from the map is carved deterministically out of `train` (see sources.py).
"""

from dataclasses import dataclass, field

from ..errors import AtatError
from . import synthetic

SPLITS = ("train", "valid", "test")
PARQUET_REVISION = "refs/convert/parquet"
# Where MDLM and friends use a learned tokenizer we default to the same one; offline, pass
# `--tokenizer bpe` (trained on the corpus) or `--tokenizer bytes`.
DEFAULT_BPE_VOCAB = 8192


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    kind: str  # "builtin" | "hub" | "local"
    description: str
    hub_id: str | None = None
    config: str | None = None
    revision: str | None = None
    text_field: str = "text"
    splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split folder
    default_tokenizer: str = "bpe"
    default_vocab_size: int | None = None  # only for tokenizers we train (bpe)
    pattern: str = "{config}/{split}/*.parquet"  # data files, relative to the repo root
    # How this preparation differs from MDLM's (kuleshov-group/mdlm dataloader.py), where its
    # published numbers depend on it: shown by `atat data info`.
    vs_mdlm: str = ""

    def data_files(self, hub_split: str) -> str:
        """The parquet glob of one hub split, relative to the dataset repository root."""
        return self.pattern.format(config=self.config, split=hub_split)


def _hub(name, description, hub_id, config, splits, tokenizer, **kw) -> CorpusSpec:
    return CorpusSpec(name=name, kind="hub", description=description, hub_id=hub_id, config=config,
                      revision=PARQUET_REVISION, splits=splits, default_tokenizer=tokenizer, **kw)


_WIKITEXT_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_WIKITEXT_VS_MDLM = ("MDLM's zero-shot WikiText numbers apply its WikiText detokeniser (wt_detokenizer: ' @-@ ' "
                     "-> '-', spaces before punctuation, ...) to the raw text; atat reads the raw text as is "
                     "(blank lines dropped).")

CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in [
        CorpusSpec(
            name="pydocs", kind="builtin",
            description="CPython's bundled docs: pydoc topics + stdlib docstrings (~1.5 MB)",
            default_tokenizer="bpe", default_vocab_size=DEFAULT_BPE_VOCAB,
        ),
        # Bytes by default: one token per byte of text plus one EOS per document, the simplest
        # accounting; the floor is per byte of text, so it holds for any lossless tokenizer.
        CorpusSpec(
            name="synthetic", kind="builtin",
            description=f"Word-level Markov source, generated offline (~2 MB): a tiny model "
                        f"converges in minutes; exact entropy floor "
                        f"{synthetic.default_source().floor_bits_per_byte:.4f} bits/byte",
            default_tokenizer="bytes",
        ),
        # OpenWebText has only a train split; MDLM holds out the last 100k documents, we carve
        # valid/test deterministically by document hash (capped at 100k documents each).
        _hub("openwebtext", "OpenWebText, web pages linked from Reddit (~8M docs, ~40 GB)",
             "Skylion007/openwebtext", "plain_text", {"train": "train"}, "gpt2",
             vs_mdlm="MDLM validates on the last 100,000 documents of the train split (train[:-100000] / "
                     "train[-100000:]); atat carves valid and test by document hash (at most 100,000 documents "
                     "each), so its validation documents are not MDLM's. The documents count below is what this "
                     "fetch read from the parquet conversion."),
        _hub("wikitext2", "WikiText-2 (raw), Wikipedia good/featured articles (~2M words)",
             "Salesforce/wikitext", "wikitext-2-raw-v1", _WIKITEXT_SPLITS, "gpt2", vs_mdlm=_WIKITEXT_VS_MDLM),
        _hub("wikitext103", "WikiText-103 (raw), Wikipedia good/featured articles (~103M words)",
             "Salesforce/wikitext", "wikitext-103-raw-v1", _WIKITEXT_SPLITS, "gpt2", vs_mdlm=_WIKITEXT_VS_MDLM),
        # One row per split (90M/5M/5M characters), the classic character-level benchmark.
        _hub("text8", "text8, first 100M characters of cleaned English Wikipedia",
             "afmck/text8", "default", {"train": "train", "valid": "validation", "test": "test"},
             "bytes",
             vs_mdlm="MDLM cuts text8 into 256-character sequences without EOS; atat's blocks are consecutive "
                     "model.seq_len-token slices of each split with one EOS at the split's end: the same chunks "
                     "at seq_len 256 with the bytes tokenizer, apart from that one EOS."),
        # LM1B ships train/test only; like MDLM we evaluate on its test split.
        _hub("lm1b", "One Billion Word benchmark, shuffled news sentences (~30M sentences)",
             "dvruette/lm1b", "default", {"train": "train", "valid": "test", "test": "test"},
             "bert-base-uncased",
             vs_mdlm="MDLM applies its LM1B detokeniser (lm1b_detokenizer) and pads each sentence to 128 tokens "
                     "or wraps them (its `wrap` setting); atat reads the sentences as they are and packs them into "
                     "blocks with EOS between, so per-token numbers are not MDLM's."),
        _hub("tinystories", "TinyStories, short GPT-generated children's stories (~2M stories)",
             "roneneldan/TinyStories", "default", {"train": "train", "valid": "validation"},
             "gpt2", vs_mdlm="Not one of MDLM's corpora; its test split is carved out of train."),
    ]
}


def get_corpus(name: str) -> CorpusSpec:
    """The registered corpus called `name`, or an AtatError listing the known ones."""
    if name not in CORPORA:
        raise AtatError(
            f"unknown corpus '{name}'",
            hint=f"known: {', '.join(CORPORA)} ; "
                 "or pass text files: atat data fetch a.txt --name NAME",
        )
    return CORPORA[name]
