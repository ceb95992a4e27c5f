"""The `synthetic` corpus: its floor against an independent computation, its sampler's exact
information, `atat data fetch/info/list` offline, its determinism, and the gap to the floor that
`evaluate_run` and `atat eval` report.
"""

import json
import math
import socket

import numpy as np
import pytest

from atat_cli.cli.app import main
from atat_cli.data import ensure_prepared
from atat_cli.data.synthetic import DOCS, WORDS, MarkovSource, default_source, entropy_floor
from atat_cli.errors import AtatError
from atat_cli.runs import evaluate_run

from conftest import FAST


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Data and runs folders with `synthetic` prepared once, through the CLI, with no network."""
    root = tmp_path_factory.mktemp("synthetic")

    def no_network(*args, **kwargs):
        raise AssertionError("synthetic must be built offline")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        for variable, folder in (("ATAT_DATA_DIR", "data"), ("ATAT_RUNS_DIR", "runs")):
            mp.setenv(variable, str(root / folder))
        mp.delenv("ATAT_DEBUG", raising=False)
        assert main(["data", "fetch", "synthetic", "--json"]) == 0
        yield root


def test_floor_matches_an_independent_computation():
    chain = default_source()
    P = chain.transitions
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-12)
    assert P.min() >= 0.04 / len(WORDS) - 1e-15  # irreducible and aperiodic: one stationary law
    # The stationary law by power iteration instead of an eigenvector.
    pi = np.full(len(WORDS), 1 / len(WORDS))
    for _ in range(10_000):
        pi = pi @ P
    np.testing.assert_allclose(chain.stationary, pi, atol=1e-12)
    # Entropy per word and bytes per word, written out term by term.
    h_word = -sum(pi[i] * P[i, j] * math.log2(P[i, j]) for i in range(len(WORDS)) for j in range(len(WORDS)))
    bytes_per_word = sum(pi[i] * (len(w) + 1) for i, w in enumerate(WORDS))
    assert chain.bits_per_word == pytest.approx(h_word, rel=1e-12)
    assert chain.bytes_per_word == pytest.approx(bytes_per_word, rel=1e-12)
    assert chain.floor_bits_per_byte == pytest.approx(h_word / bytes_per_word, rel=1e-12)
    assert entropy_floor()["bits_per_byte"] == chain.floor_bits_per_byte
    assert 0.2 < chain.floor_bits_per_byte < 0.6


def test_sampled_information_is_exact_and_near_the_floor():
    chain = default_source()
    docs, bits = chain.sample(40, 1000, np.random.default_rng(5))
    index = {w: i for i, w in enumerate(WORDS)}
    recomputed = 0.0
    for doc in docs:
        states = [index[w] for w in doc.split(" ")]  # the text gives back the words
        assert len(states) == 1000
        recomputed -= math.log2(chain.stationary[states[0]])
        recomputed -= sum(math.log2(chain.transitions[a, b]) for a, b in zip(states, states[1:]))
    assert bits == pytest.approx(recomputed, rel=1e-12)
    per_byte = bits / sum(len(d.encode()) for d in docs)
    # Above the floor in expectation (first word, no trailing space); ~0.003 bits/byte of noise.
    assert per_byte == pytest.approx(chain.floor_bits_per_byte, abs=0.015)


def test_source_scorer_is_exact_and_tells_the_source_from_a_greedy_sampler():
    chain = default_source()
    P = chain.transitions
    i = {w: k for k, w in enumerate(WORDS)}
    # Hand example: the first and last pieces are cut; "cog" and the empty word of a double space
    # are invalid and break the pairs around them.
    got = chain.score_texts(["ig at big cow  fly cog hen drum fl"])
    assert got["words"] == 8 and got["valid"] == pytest.approx(6 / 8) and got["pairs"] == 3
    nll = -(math.log(P[i["at"], i["big"]]) + math.log(P[i["big"], i["cow"]]) + math.log(P[i["hen"], i["drum"]])) / 3
    assert got["nll_per_word"] == pytest.approx(nll, rel=1e-12)
    # The source's own text scores its entropy rate and stationary entropy; its pairs match.
    docs, _ = chain.sample(20, 500, np.random.default_rng(3))
    own = chain.score_texts(docs)
    assert own["valid"] == 1.0
    assert own["nll_per_word"] == pytest.approx(own["entropy_rate"], abs=0.04)
    assert own["word_entropy"] == pytest.approx(own["stationary_entropy"], abs=0.03)
    assert own["bigram_kl"] < 0.01
    # A greedy chain (always the likeliest next word) looks "better" by NLL, and is caught by the
    # entropy and the pair divergence.
    state, words = 0, []
    for _ in range(2000):
        words.append(WORDS[state])
        state = int(P[state].argmax())
    greedy = chain.score_texts([" ".join(words)])
    assert greedy["nll_per_word"] < own["nll_per_word"] - 0.3
    assert greedy["word_entropy"] < own["word_entropy"] - 0.3 and greedy["bigram_kl"] > 0.3
    assert chain.score_texts(["no"])["words"] == 0 and chain.score_texts(["no"])["nll_per_word"] is None


@pytest.mark.parametrize("words", [("a",), ("a", "a"), ("a", "b c"), ("a", "")])
def test_bad_words_are_refused(words):
    with pytest.raises(AtatError, match="distinct non-empty words"):
        MarkovSource.random(words)


def test_bad_sample_sizes_are_refused():
    with pytest.raises(AtatError, match="at least one document"):
        default_source().sample(0, 10, np.random.default_rng(0))


def test_fetch_offline_and_info_shows_the_floor(home, capsys):
    code, out, err = run(capsys, "data", "info", "synthetic", "--json")
    assert code == 0, err
    meta = json.loads(out)
    assert meta["kind"] == "builtin" and meta["tokenizer"]["name"] == "bytes"
    assert meta["entropy_floor"]["bits_per_byte"] == default_source().floor_bits_per_byte
    for split, n_docs in DOCS.items():
        s = meta["splits"][split]
        assert s["documents"] == n_docs and s["tokens"] == s["utf8_bytes"] + n_docs  # + EOS
    assert 1_000_000 < meta["splits"]["train"]["utf8_bytes"] < 4_000_000
    code, out, _ = run(capsys, "data", "info", "synthetic")
    assert code == 0 and f"floor      {default_source().floor_bits_per_byte:.4f} bits/byte" in out
    code, out, _ = run(capsys, "data", "list", "--json")
    row = next(r for r in json.loads(out)["corpora"] if r["name"] == "synthetic")
    assert row["prepared"] and f"{default_source().floor_bits_per_byte:.4f} bits/byte" in row["description"]


def test_corpus_is_deterministic(home, tmp_path):
    first = json.loads((home / "data" / "synthetic" / "meta.json").read_text())
    again = ensure_prepared("synthetic", root=tmp_path, progress=False)
    assert again.meta["content_hash"] == first["content_hash"]
    assert again.meta["source"] == first["source"]
    # Prepared once, it is reused (same generator settings), not generated again.
    assert ensure_prepared("synthetic", root=tmp_path, progress=False).meta["created"] == again.meta["created"]


def test_eval_reports_a_positive_gap_to_the_floor(home, capsys):
    args = ["train", "--size", "test", "--data", "synthetic", "--max-steps", "20", "--json"]
    for item in FAST:
        if not item.startswith("data.name="):
            args += ["--set", item]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    run_dir = json.loads(out)["run"]
    result = evaluate_run(run_dir, mc=2, max_blocks=32)
    floor = default_source().floor_bits_per_byte
    assert result["data"] == "synthetic" and result["floor_bits_per_byte"] == floor
    assert result["gap_to_floor_bits_per_byte"] == pytest.approx(result["bits_per_byte"] - floor)
    assert result["gap_to_floor_bits_per_byte"] > 0  # a bound, and a barely trained model
    code, out, err = run(capsys, "eval", run_dir, "--mc", "2", "--max-blocks", "32")
    assert code == 0, err
    assert "entropy floor (bits/byte)" in out and "gap to floor (bits/byte)" in out
