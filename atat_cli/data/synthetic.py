"""`synthetic`: a word-level Markov source whose entropy per byte of text is known exactly.

A small model converges on it in minutes on a CPU, and its entropy rate is a floor that no
model's bits per byte can go below, so every run on it has a known gap to the best possible.

The source. A random transition matrix P over a few words (seeded): mostly-sparse Dirichlet rows,
so the chain has low entropy, mixed with a little uniform so that every transition has
probability >= MIX / n and the chain is irreducible and aperiodic, with one stationary law pi
(pi P = pi). A document is WORDS_PER_DOC words: the first drawn from pi, each next one from the
row of the one before, joined by single spaces. Documents are independent.

The floor, in the units atat reports. atat's bits per byte (evaluation.likelihood.summarize) is
    bits_per_byte = (nats summed over the evaluated tokens) / ln 2 / (tokens * B),
with B = PreparedData.bytes_per_token = utf8_bytes / tokens of the split, where utf8_bytes counts
the documents' text only and tokens also counts one EOS per document. So the denominator is
exactly the text's bytes, while the numerator also pays for every EOS.
  * No word holds a space and the words are distinct, so the bytes of a document determine its
    words: coding the bytes costs at least the information of the words (whatever the
    tokenizer, since tokenizing is lossless).
  * A document of n words carries H(pi) + (n - 1) H_w >= n H_w bits, since H(pi) = H(X2) >=
    H(X2 | X1) = H_w, in n (E_pi|w| + 1) - 1 bytes. Hence the floor, in bits per byte of text:
        floor = H_w / (E_pi|w| + 1),    H_w = sum_i pi_i H(P_i) = -sum_ij pi_i P_ij log2 P_ij
    It is below the expected information per byte of every split (the missing trailing space
    only raises that). EOS tokens, blocks scored without the context before them, and a model
    that is not the source only add to the code length (Shannon / Gibbs).
Per token the floor is not one number: tokens per byte depend on the tokenizer and on the
documents per split (EOS), so it is stated per byte; times ln 2 * bytes_per_token(split) it is
in the nats per token of that split.

Everything is deterministic: the chain from CHAIN_SEED, the documents from DOCS_SEED (one
generator, splits drawn in DOCS order, each split's uniforms drawn as one (docs, words) array),
so the same corpus and content hash on every machine.
"""

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import AtatError

# Distinct words of 2-4 letters, no two sharing a letter: any visible letter tells a denoiser
# which word it is part of.
WORDS = ("at", "big", "cow", "fly", "hen", "drum")
CHAIN_SEED = 0
DOCS_SEED = 1
CONCENTRATION = 0.15  # Dirichlet concentration of the rows: well below 1, so rows are peaked
MIX = 0.04  # share of the uniform mixed into every row: keeps each transition >= MIX / n
WORDS_PER_DOC = 1000  # long documents: EOS (a boundary no model can foresee) is rare
# ~3.9 bytes per word: ~2 MB of train text (what a screening run passes over in minutes) and
# ~80 kB per held-out split (enough that the sampling noise of its bits/byte is ~0.003).
DOCS = {"train": 500, "valid": 20, "test": 20}


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """A first-order Markov chain over words: P[i, j] = p(next word j | word i), pi stationary."""

    words: tuple[str, ...]
    transitions: np.ndarray
    stationary: np.ndarray

    @classmethod
    def random(cls, words=WORDS, seed: int = CHAIN_SEED) -> "MarkovSource":
        """The seeded random chain over `words` described in the module docstring."""
        words = _check_words(words)
        n = len(words)
        rng = np.random.default_rng(seed)
        P = (1 - MIX) * rng.dirichlet(np.full(n, CONCENTRATION), size=n) + MIX / n
        return cls(words, P, stationary_distribution(P))

    @property
    def bits_per_word(self) -> float:
        """The entropy rate H_w = sum_i pi_i H(P_i), in bits per word."""
        return float(self.stationary @ -(self.transitions * np.log2(self.transitions)).sum(axis=1))

    @property
    def bytes_per_word(self) -> float:
        """E_pi|w| + 1: the bytes of a word plus the space after it, under pi."""
        return float(self.stationary @ np.array([len(w.encode()) + 1.0 for w in self.words]))

    @property
    def floor_bits_per_byte(self) -> float:
        """H_w / (E_pi|w| + 1): no model codes the documents' text in fewer bits per byte."""
        return self.bits_per_word / self.bytes_per_word

    def sample(self, n_docs: int, words_per_doc: int, rng: np.random.Generator) -> tuple[list[str], float]:
        """`n_docs` documents of `words_per_doc` words, and their exact information in bits.

        Inverse-CDF sampling from one (n_docs, words_per_doc) array of uniforms (the same
        numbers, in the same order, as drawing each document's in turn); the loop runs over word
        positions, each step drawing the next word of every document at once.
        """
        if n_docs < 1 or words_per_doc < 1:
            raise AtatError(f"need at least one document of one word, got {n_docs} x {words_per_doc}")
        u = rng.random((n_docs, words_per_doc))
        cum_P, cum_pi = np.cumsum(self.transitions, axis=1), np.cumsum(self.stationary)
        last = len(self.words) - 1
        states = np.empty((n_docs, words_per_doc), dtype=np.int64)
        # searchsorted(side="right"): the number of cumulative probabilities <= u. Clipped: a
        # cumulative sum may end a rounding error below 1.
        states[:, 0] = np.minimum(np.searchsorted(cum_pi, u[:, 0], side="right"), last)
        for t in range(1, words_per_doc):
            row = cum_P[states[:, t - 1]]
            states[:, t] = np.minimum((row <= u[:, t, None]).sum(axis=1), last)
        bits = -np.log2(self.stationary[states[:, 0]]).sum()
        bits -= np.log2(self.transitions[states[:, :-1], states[:, 1:]]).sum()
        vocab = np.array(self.words, dtype=object)
        return [" ".join(doc) for doc in vocab[states]], float(bits)


    def score_texts(self, texts: list[str]) -> dict:
        """The exact quality of generated texts under the source (samplers are judged by it).

        Each text is split at single spaces and its first and last pieces are dropped (a sample
        of a block may start and end inside a word); the rest are its words. Over all texts:
          words           interior words scored;
          valid           the share of them that are words of the source (a double space, a
                          fused or broken word is not);
          nll_per_word    -log P(w' | w) in nats, averaged over consecutive valid pairs: what the
                          source itself scores in expectation is entropy_rate (H_w ln 2), and a
                          sampler that prefers likely words scores below it, so read it with
          word_entropy    the entropy (nats) of the pooled word frequencies, which the source's
                          own text brings to stationary_entropy (H(pi)): low diversity shows here;
          bigram_kl       KL(empirical pair frequencies || pi_i P_ij), nats: 0 only for text
                          whose pairs are the source's (plug-in, so biased up by ~35 / (2 pairs)).
        """
        index = {w: i for i, w in enumerate(self.words)}
        n = len(self.words)
        pairs = np.zeros((n, n))
        unigrams = np.zeros(n)
        total = 0
        for text in texts:
            ids = np.array([index.get(w, -1) for w in text.split(" ")[1:-1]], dtype=np.int64)
            total += len(ids)
            ok = ids >= 0
            np.add.at(unigrams, ids[ok], 1)
            both = ok[:-1] & ok[1:]
            np.add.at(pairs, (ids[:-1][both], ids[1:][both]), 1)
        n_pairs = pairs.sum()
        joint = self.stationary[:, None] * self.transitions
        q = pairs / max(n_pairs, 1)
        u = unigrams / max(unigrams.sum(), 1)
        return {
            "words": total,
            "valid": float(unigrams.sum() / total) if total else None,
            "pairs": int(n_pairs),
            "nll_per_word": float(-(pairs * np.log(self.transitions)).sum() / n_pairs) if n_pairs else None,
            "entropy_rate": self.bits_per_word * np.log(2),
            "word_entropy": float(-(u[u > 0] * np.log(u[u > 0])).sum()) if unigrams.sum() else None,
            "stationary_entropy": float(-(self.stationary * np.log(self.stationary)).sum()),
            "bigram_kl": float((q[q > 0] * np.log(q[q > 0] / joint[q > 0])).sum()) if n_pairs else None,
        }


def stationary_distribution(P: np.ndarray) -> np.ndarray:
    """pi with pi P = pi and sum 1: the left eigenvector of P for eigenvalue 1."""
    evals, evecs = np.linalg.eig(P.T)
    pi = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    return pi / pi.sum()


def _check_words(words) -> tuple[str, ...]:
    words = tuple(words)
    # The floor needs the bytes to determine the words: distinct words, none empty or spaced.
    if len(words) < 2 or len(set(words)) != len(words) or not all(
            isinstance(w, str) and w and not any(c.isspace() for c in w) for w in words):
        raise AtatError(f"a Markov source needs >= 2 distinct non-empty words without whitespace, "
                        f"got {words!r}")
    return words


@functools.cache
def default_source() -> MarkovSource:
    """The chain of the registered corpus: WORDS, seeded with CHAIN_SEED."""
    return MarkovSource.random(WORDS, CHAIN_SEED)


def documents() -> dict:
    """The registered corpus' documents, {"train": texts, "valid": texts, "test": texts}."""
    rng = np.random.default_rng(DOCS_SEED)
    return {split: default_source().sample(n, WORDS_PER_DOC, rng)[0] for split, n in DOCS.items()}


def describe() -> str:
    """What meta.json records as the source: any change to it prepares the corpus again."""
    counts = "/".join(str(n) for n in DOCS.values())
    return (f"word-level Markov chain over {' '.join(WORDS)} (Dirichlet({CONCENTRATION}) rows + "
            f"{MIX} uniform, chain seed {CHAIN_SEED}; documents seed {DOCS_SEED}, {counts} "
            f"train/valid/test documents of {WORDS_PER_DOC} words)")


def entropy_floor() -> dict:
    """The registered corpus' floor, as meta.json's "entropy_floor" records it."""
    source = default_source()
    return {
        "bits_per_byte": source.floor_bits_per_byte,
        "bits_per_word": source.bits_per_word,
        "bytes_per_word": source.bytes_per_word,
        "how": "entropy rate of the word chain per byte of text: H_w / (E|w| + 1) with "
               "H_w = -sum_ij pi_i P_ij log2 P_ij (atat_cli/data/synthetic.py)",
    }
