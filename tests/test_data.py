"""Data pipeline: tokenizers, preparation, prepared-data access, batch loading. Offline, fast."""

import json

import numpy as np
import pytest

from atat_cli.data import (
    CORPORA,
    BatchLoader,
    PreparedData,
    Tokenizer,
    ensure_prepared,
    get_corpus,
    load_tokenizer,
    prepared_corpora,
    pydocs,
    tokenize,
)
from atat_cli.errors import AtatError

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.\nA second line in the same paragraph.",
    "Ünïcödé is fine too: naïve café, 東京, emoji 🙂.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
    "The five boxing wizards jump quickly.",
]


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("ATAT_DATA_DIR", str(root))
    return root


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def prepare_local(tmp_path, name="mycorpus", **kw):
    f = write(tmp_path / "a.txt", "\n\n".join(DOCS[:4]) + "\n")
    g = write(tmp_path / "b.txt", "\n\n\n".join(DOCS[4:]))
    return ensure_prepared(name, files=[f, g], progress=False, **{"tokenizer": "bytes", **kw})


# ---- tokenizers ----------------------------------------------------------------------------


def test_bytes_tokenizer_round_trip(tmp_path):
    tok = Tokenizer.bytes()
    assert (tok.vocab_size, tok.eos_id) == (257, 256)
    for text in DOCS:
        ids = tok.encode(text)
        assert max(ids) < 256 and tok.decode(ids) == text
    assert tok.encode_batch(DOCS[:2]) == [tok.encode(DOCS[0]), tok.encode(DOCS[1])]
    tok.save(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").encode(DOCS[2]) == tok.encode(DOCS[2])
    assert load_tokenizer("bytes").vocab_size == 257


def test_bpe_tokenizer_vocab_size_and_round_trip(tmp_path):
    texts = pydocs._topic_documents()[:20]  # ~100 kB of varied English
    tok = Tokenizer.train_bpe(texts, vocab_size=600)
    assert tok.vocab_size == 600 and 0 <= tok.eos_id < 600
    for text in DOCS + texts[:3]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # it actually merges
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert (again.vocab_size, again.eos_id) == (tok.vocab_size, tok.eos_id)
    assert again.encode(DOCS[2]) == tok.encode(DOCS[2])
    with pytest.raises(AtatError):
        Tokenizer.train_bpe(texts, vocab_size=100)  # smaller than the byte alphabet


def test_unknown_tokenizer_names():
    with pytest.raises(AtatError):
        load_tokenizer("bpe")  # needs a corpus to be trained on


def test_hub_tokenizer_offline_error_and_save_load(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AtatError, match="not available") as e:
        load_tokenizer("gpt2")
    assert "--tokenizer bpe" in e.value.hint
    # A transformers tokenizer (built locally here) is saved and reloaded like a hub one.
    bpe = Tokenizer.train_bpe(DOCS * 3, vocab_size=280)
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe._backend, eos_token="<|endoftext|>")
    tok = Tokenizer._wrap_hf(hf, "tiny-hf")
    assert (tok.kind, tok.vocab_size, tok.eos_id) == ("hf", bpe.vocab_size, bpe.eos_id)
    assert tok.encode(DOCS[2]) == bpe.encode(DOCS[2]) and tok.decode(tok.encode(DOCS[0])) == DOCS[0]
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.name == "tiny-hf" and again.encode_batch(DOCS) == tok.encode_batch(DOCS)


# ---- preparation -----------------------------------------------------------------------------


def test_local_files_prepared(tmp_path, data_dir):
    data = prepare_local(tmp_path)
    assert data.path == data_dir / "mycorpus"
    meta = json.loads((data.path / "meta.json").read_text())
    assert meta == data.meta and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == {"kind": "bytes", "name": "bytes", "vocab_size": 257,
                                 "eos_id": 256, "requested_vocab_size": None}
    splits = meta["splits"]
    assert set(splits) == {"train", "valid", "test"}
    # 6 documents: each held-out split gets one, never empty.
    assert [splits[s]["documents"] for s in ("train", "valid", "test")] == [4, 1, 1]
    all_tokens = []
    for split, s in splits.items():
        tokens = data.tokens(split)
        assert tokens.dtype == np.uint16 and len(tokens) == s["tokens"]
        assert (data.path / f"{split}.bin").stat().st_size == 2 * s["tokens"]
        # Every document is followed by EOS, and the text between EOS is a whole document.
        assert tokens[-1] == 256 and (tokens == 256).sum() == s["documents"]
        pieces = np.split(tokens, np.flatnonzero(tokens == 256) + 1)[:-1]
        texts = [bytes(p[:-1].astype(np.uint8)).decode() for p in pieces]
        assert all(t in DOCS for t in texts)
        assert s["utf8_bytes"] == sum(len(t.encode()) for t in texts)
        assert s["tokens"] == s["utf8_bytes"] + s["documents"]  # bytes + one EOS per document
        all_tokens += texts
    assert sorted(all_tokens) == sorted(DOCS)
    assert len(meta["content_hash"]) == 64
    assert data.bytes_per_token("train") == pytest.approx(
        splits["train"]["utf8_bytes"] / splits["train"]["tokens"])
    assert data.tokenizer().decode(data.tokens("valid")[:-1]) in DOCS
    assert not list(data_dir.glob(".*"))  # no temp folder left behind


def test_split_is_deterministic_and_order_independent(tmp_path, data_dir):
    a = prepare_local(tmp_path, name="one")
    write(tmp_path / "c.txt", "\n\n".join(reversed(DOCS)))
    b = ensure_prepared("two", files=[tmp_path / "c.txt"], tokenizer="bytes", progress=False)
    assert bytes(a.tokens("valid")) == bytes(b.tokens("valid"))
    assert bytes(a.tokens("test")) == bytes(b.tokens("test"))


def test_folder_with_splits(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write(folder / "train.txt", "\n\n".join(DOCS[:4]))
    write(folder / "valid.txt", DOCS[4])
    write(folder / "test.txt", DOCS[5])
    data = ensure_prepared("folder", files=[folder], tokenizer="bytes", progress=False)
    splits = data.meta["splits"]
    assert [splits[s]["documents"] for s in ("train", "valid", "test")] == [4, 1, 1]
    assert data.tokenizer().decode(data.tokens("valid")[:-1]) == DOCS[4]
    assert data.tokenizer().decode(data.tokens("test")[:-1]) == DOCS[5]


def test_bpe_preparation_in_worker_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tokenize, "PARALLEL_MIN_CHARS", 0)  # force the multiprocessing path
    monkeypatch.setattr(tokenize, "CHUNK_DOCS", 2)
    data = prepare_local(tmp_path, tokenizer="bpe", vocab_size=300)
    assert "in-process" not in capsys.readouterr().err  # the workers did the work
    tok = data.tokenizer()
    assert data.meta["tokenizer"]["kind"] == "bpe" and data.vocab_size == tok.vocab_size <= 300
    stream = data.tokens("train")
    assert stream.max() < data.vocab_size and stream[-1] == data.eos_id
    # The same as tokenizing in-process.
    pieces = np.split(stream, np.flatnonzero(stream == data.eos_id) + 1)[:-1]
    assert [list(p[:-1]) for p in pieces] == [tok.encode(tok.decode(p[:-1])) for p in pieces]


def test_reuse_and_force(tmp_path, data_dir, capsys):
    data = prepare_local(tmp_path)
    mtime = (data.path / "meta.json").stat().st_mtime_ns
    again = prepare_local(tmp_path)
    assert (again.path / "meta.json").stat().st_mtime_ns == mtime
    assert "Reusing" in capsys.readouterr().err
    # No settings at all (as `atat train` asks): whatever is prepared is reused.
    assert ensure_prepared("mycorpus", progress=False).meta == data.meta
    forced = prepare_local(tmp_path, force=True)
    assert (forced.path / "meta.json").stat().st_mtime_ns != mtime
    assert forced.meta["content_hash"] == data.meta["content_hash"]
    # Other tokenizer settings: refused (runs trained on it would lose their data), untouched...
    with pytest.raises(AtatError, match="already prepared with other settings") as refused:
        prepare_local(tmp_path, tokenizer="bpe", vocab_size=300)
    assert "--force" in refused.value.hint
    assert PreparedData(data.path).meta == forced.meta
    # ... and replaced with --force
    other = prepare_local(tmp_path, tokenizer="bpe", vocab_size=300, force=True)
    assert other.meta["tokenizer"]["kind"] == "bpe"
    assert prepared_corpora(data_dir) == ["mycorpus"]


def test_leftover_temp_folder_is_not_prepared(tmp_path, data_dir):
    stale = data_dir / ".mycorpus.tmp-99999"
    stale.mkdir(parents=True)
    write(stale / "meta.json", "{}")
    assert prepared_corpora(data_dir) == []
    with pytest.raises(AtatError):
        ensure_prepared("mycorpus", progress=False)  # not prepared, and no files to do it with
    data = prepare_local(tmp_path)
    assert data.path == data_dir / "mycorpus" and data.meta["splits"]["train"]["tokens"] > 0


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"  \n\n \n", "empty"),
    (b"caf\xe9 latin-1", "not UTF-8"),
])
def test_bad_files(tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(AtatError, match=message) as e:
        ensure_prepared("bad", files=[bad], tokenizer="bytes", progress=False)
    assert "bad.txt" in e.value.message


def test_missing_file_unknown_corpus_and_bad_names(tmp_path):
    with pytest.raises(AtatError, match="not found"):
        ensure_prepared("x", files=[tmp_path / "missing.txt"], progress=False)
    with pytest.raises(AtatError, match="unknown corpus 'nope'") as e:
        get_corpus("nope")
    assert "pydocs" in e.value.hint and "--name" in e.value.hint
    with pytest.raises(AtatError, match="unknown corpus"):
        ensure_prepared("nope", progress=False)
    with pytest.raises(AtatError):
        ensure_prepared("../evil", files=[write(tmp_path / "a.txt", "x\n\ny\n\nz")])
    with pytest.raises(AtatError, match="registered"):
        ensure_prepared("pydocs", files=[tmp_path / "a.txt"])
    with pytest.raises(AtatError, match="too few"):
        ensure_prepared("tiny", files=[write(tmp_path / "t.txt", "one doc")], progress=False)
    with pytest.raises(AtatError, match="vocab-size"):
        ensure_prepared("v", files=[tmp_path / "a.txt"], tokenizer="bytes", vocab_size=500,
                        progress=False)


def test_corrupt_meta(tmp_path, data_dir):
    data = prepare_local(tmp_path)
    (data.path / "meta.json").write_text('{"name": "mycorpus", "tok')
    with pytest.raises(AtatError, match="corrupt") as e:
        PreparedData(data.path)
    assert "--force" in e.value.hint
    with pytest.raises(AtatError, match="corrupt"):
        prepare_local(tmp_path)
    assert prepare_local(tmp_path, force=True).meta["splits"]["train"]["tokens"] > 0
    (data.path / "meta.json").write_text("{}")
    with pytest.raises(AtatError, match="corrupt"):
        PreparedData(data.path)
    with pytest.raises(AtatError, match="meta.json is missing"):
        PreparedData(tmp_path)


def test_blocks(tmp_path):
    data = prepare_local(tmp_path)
    tokens = np.asarray(data.tokens("train"))
    blocks = data.blocks("train", 16)
    assert blocks.shape == (len(tokens) // 16, 16)
    assert np.array_equal(blocks.reshape(-1), tokens[: blocks.size])
    assert isinstance(blocks, np.memmap)  # a view: nothing is read into memory
    assert data.blocks("valid", 10_000).shape == (0, 10_000)
    with pytest.raises(AtatError, match="unknown split"):
        data.tokens("validation")


# ---- batch loader ---------------------------------------------------------------------------


def make_blocks(n=50, seq_len=4):
    return np.arange(n * seq_len, dtype=np.uint16).reshape(n, seq_len)


def test_batch_loader_deterministic():
    blocks = make_blocks()
    a, b = BatchLoader(blocks, 4, seed=1), BatchLoader(blocks, 4, seed=1)
    batches = [a.next_batch() for _ in range(30)]  # crosses epoch boundaries (12 per epoch)
    assert all(x.equal(y) for x, y in zip(batches, (next(b) for _ in range(30))))
    assert batches[0].shape == (4, 4) and str(batches[0].dtype) == "torch.int64"
    assert not batches[0].equal(BatchLoader(blocks, 4, seed=2).next_batch())
    # One epoch sees each block at most once (the incomplete last batch is dropped).
    epoch = np.concatenate([x[:, 0].numpy() for x in batches[:12]]) // 4
    assert len(set(epoch)) == 48
    assert not np.array_equal(epoch, np.concatenate([x[:, 0].numpy() for x in batches[12:24]]) // 4)
    ordered = BatchLoader(blocks, 5, seed=0, shuffle=False)
    assert ordered.next_batch()[:, 0].tolist() == [0, 4, 8, 12, 16]


def test_batch_loader_exact_resume():
    blocks = make_blocks()
    loader = BatchLoader(blocks, 4, seed=7)
    for _ in range(5):
        loader.next_batch()
    state = loader.state_dict()
    assert state == {"epoch": 0, "position": 5}
    expected = [loader.next_batch() for _ in range(3)]
    resumed = BatchLoader(blocks, 4, seed=7)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a checkpoint round trip
    assert all(x.equal(resumed.next_batch()) for x in expected)
    # Resuming right at an epoch boundary.
    for _ in range(12 - 8):
        loader.next_batch()
    state = loader.state_dict()
    nxt = loader.next_batch()
    resumed.load_state_dict(state)
    assert resumed.next_batch().equal(nxt) and resumed.state_dict()["epoch"] == 1


def test_batch_loader_rank_sharding():
    blocks = make_blocks(n=51)
    ranks = [BatchLoader(blocks, 4, seed=3, rank=r, world_size=3) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)  # 17 blocks per rank -> 4 full batches
    seen = [set(np.concatenate([r.next_batch()[:, 0].numpy() for _ in range(4)])) for r in ranks]
    assert all(len(s) == 16 for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_batch_loader_too_little_data():
    with pytest.raises(AtatError, match="batch") as e:
        BatchLoader(make_blocks(n=6), 4, seed=0, world_size=2)
    assert "batch_size" in e.value.hint


# ---- corpora: hub (from a local mirror) and pydocs -------------------------------------------


def test_registry():
    assert set(CORPORA) >= {"pydocs", "openwebtext", "wikitext2", "wikitext103", "text8", "lm1b",
                            "tinystories"}
    assert CORPORA["pydocs"].kind == "builtin" and CORPORA["pydocs"].default_tokenizer == "bpe"
    assert CORPORA["openwebtext"].default_tokenizer == "gpt2"
    assert CORPORA["lm1b"].default_tokenizer == "bert-base-uncased"
    assert CORPORA["text8"].default_tokenizer == "bytes"
    for spec in CORPORA.values():
        if spec.kind == "hub":
            assert spec.revision and spec.hub_id and "train" in spec.splits
            assert spec.vs_mdlm  # every hub corpus says how it differs from MDLM's preparation


def test_hub_corpus_from_local_mirror(tmp_path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = get_corpus("wikitext2")
    mirror = tmp_path / "hub"
    rows = {"train": [" = Title = \n", "", f" {DOCS[0]}\n", f" {DOCS[1]}\n"],
            "validation": [f" {DOCS[2]}\n", ""], "test": [f" {DOCS[3]}\n"]}
    for hub_split, texts in rows.items():
        folder = mirror / spec.hub_id / spec.config / hub_split
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"text": texts}), folder / "0000.parquet")
    monkeypatch.setenv("ATAT_HUB_ROOT", str(mirror))
    data = ensure_prepared("wikitext2", tokenizer="bytes", progress=False)
    splits = data.meta["splits"]
    # Blank lines are not documents.
    assert [splits[s]["documents"] for s in ("train", "valid", "test")] == [3, 1, 1]
    tok = data.tokenizer()
    assert tok.decode(data.tokens("valid")) == f" {DOCS[2]}\n<|endoftext|>"
    assert splits["test"]["utf8_bytes"] == len(f" {DOCS[3]}\n".encode())
    assert not (data.path / "hf-cache").exists()  # the download cache is not kept
    from atat_cli.cli.app import main

    assert main(["data", "info", "wikitext2", "--json"]) == 0
    assert "wt_detokenizer" in json.loads(capsys.readouterr().out)["vs_mdlm"]
    assert main(["data", "info", "wikitext2"]) == 0
    assert "vs MDLM" in capsys.readouterr().out


def test_pydocs():
    docs = pydocs.documents()
    assert len(docs) > 1000 and len(set(docs)) == len(docs)
    assert sum(len(d.encode()) for d in docs) >= 500_000
    assert any(d.startswith("json.dumps\n") for d in docs)
    assert not any(d.startswith(("test.", "idlelib.")) for d in docs)
    # Preparing reads the documents again: the same ones (deterministic), split three ways.
    data = ensure_prepared("pydocs", tokenizer="bytes", progress=False)
    splits = data.meta["splits"]
    assert all(splits[s]["documents"] > 0 for s in ("train", "valid", "test"))
    assert sum(s["documents"] for s in splits.values()) == len(docs)
    assert sum(s["utf8_bytes"] for s in splits.values()) == sum(len(d.encode()) for d in docs)
    assert data.meta["source"].startswith("pydoc_data")
    valid = data.tokenizer().decode(data.tokens("valid")).split("<|endoftext|>")[:-1]
    assert set(valid) <= set(docs)


def test_token_ids_outside_the_vocabulary_are_damage(tmp_path, data_dir):
    data = prepare_local(tmp_path)
    assert data.tokens("train").max() < data.vocab_size
    tokens = np.memmap(data.path / "valid.bin", dtype=data.meta["dtype"], mode="r+")
    tokens[3] = data.vocab_size + 5  # same size, one id past the vocabulary
    tokens.flush()
    del tokens
    with pytest.raises(AtatError, match=f"holds token id {data.vocab_size + 5}, outside the vocabulary"):
        PreparedData(data.path).blocks("valid", 8)
