"""Exported folders (`atat export`): they evaluate and sample exactly like the run they came from,
load without unpickling, carry their tokenizer, and are written safely. Bad inputs are rows in
test_bad_inputs.py."""

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from atat_cli.cli.app import main
from atat_cli.errors import AtatError
from atat_cli.runs import evaluate_run, export_run, load_run
from atat_cli.runs.hf_folder import CONFIG_FILE, WEIGHTS_FILE, write_export
from atat_cli.sampling import SamplerSettings, generate

from conftest import FAST, write_corpus

CPU = torch.device("cpu")
# The three model classes: the DiT, the AR baseline, and ATAT's bundle of the DiT, the importance
# estimator and a per-token schedule (a buffer of exponents).
METHODS = {"mdlm": ("mdlm", None), "ar": ("ar", None), "atat": ("atat", "atat/frequency")}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Data and runs folders with 'tinytext' (bytes) and 'bpetext' (a BPE), a 4-step run of each
    method on tinytext and an MDLM run on bpetext, each exported."""
    from atat_cli.config import load_config
    from atat_cli.data import ensure_prepared
    from atat_cli.training import Trainer

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATAT_DATA_DIR", str(root / "data"))
        mp.setenv("ATAT_RUNS_DIR", str(root / "runs"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("ATAT_DEBUG", raising=False)
        source = write_corpus(root / "src")
        ensure_prepared("tinytext", files=[source], tokenizer="bytes", progress=False)
        ensure_prepared("bpetext", files=[source], tokenizer="bpe", vocab_size=300, progress=False)
        runs = {}
        for name, (method, config) in [*METHODS.items(), ("bpe", ("mdlm", None))]:
            data = "bpetext" if name == "bpe" else "tinytext"
            cfg = load_config("test", method, config_file=config,
                              overrides=FAST + ["train.max_steps=4", f"data.name={data}"])
            runs[name] = root / "runs" / name
            Trainer(cfg, runs[name], progress=False, log=lambda *a, **k: None).run()
            export_run(runs[name], root / "exports" / name)
        yield {"root": root, "runs": runs, "exports": {k: root / "exports" / k for k in runs}}


def _ids(run, seed=0):
    trained = load_run(run, CPU)
    settings = None if trained.cfg.method == "ar" else SamplerSettings.requested(steps=4)
    return [s.ids for s in generate(trained, "", settings, length=12, num_samples=2, seed=seed).samples]


@pytest.mark.parametrize("name", list(METHODS))
def test_export_evaluates_and_samples_like_its_run(home, name):
    run, exported = home["runs"][name], home["exports"][name]
    # the weights are the checkpoint's EMA weights, buffers and the importance estimator included
    state = torch.load(run / "best.pt", weights_only=True)
    expected = {**state["model"], **state["ema"]["shadow"]}
    weights = load_file(exported / WEIGHTS_FILE)
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    if name == "atat":
        assert any("log_exponents" in k for k in weights) and any(k.startswith("estimator.") for k in weights)
    a = evaluate_run(run, mc=2, max_blocks=4, seed=3, device=CPU)
    b = evaluate_run(exported, mc=2, max_blocks=4, seed=3, device=CPU)
    assert b["checkpoint"] == str(exported / WEIGHTS_FILE)
    for key in ("nelbo", "bits_per_byte", "own_nelbo"):
        if key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6), key
    assert _ids(run) == _ids(exported)
    config = json.loads((exported / CONFIG_FILE).read_text())
    assert config["atat_format"] == 1 and config["atat_weights"] == "ema" and config["atat_step"] == 4
    assert config["architectures"] == [{"mdlm": "DiT", "ar": "ARModel", "atat": "ATATModel"}[name]]


def test_export_samples_without_its_corpus(home):
    # A BPE run: the export's tokenizer/ holds the tokenizer.json that decoding needs.
    run, exported = home["runs"]["bpe"], home["exports"]["bpe"]
    assert (exported / "tokenizer" / "tokenizer.json").is_file()
    before = _ids(exported, seed=5)
    corpus = home["root"] / "data" / "bpetext"
    corpus.rename(corpus.with_name("elsewhere"))
    try:
        assert _ids(exported, seed=5) == before
        code = main(["sample", str(exported), "--json", "--seed", "0", "--length", "6", "--steps", "2"])
        assert code == 0
        with pytest.raises(AtatError, match="bpetext"):  # evaluation needs the token streams
            evaluate_run(exported, max_blocks=1, device=CPU)
        with pytest.raises(AtatError, match="bpetext"):  # a checkpoint's tokenizer is in its corpus
            load_run(run, CPU)
    finally:
        corpus.with_name("elsewhere").rename(corpus)


def test_loading_an_export_never_unpickles(home, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    trained = load_run(home["exports"]["atat"], CPU)
    assert trained.importance is not None
    assert generate(trained, "", SamplerSettings.requested("importance", 2), length=4, seed=0).samples


def test_no_ema_exports_the_raw_weights(home, tmp_path):
    run = home["runs"]["mdlm"]
    export_run(run, tmp_path / "raw", ema=False)
    state = torch.load(run / "best.pt", weights_only=True)
    weights = load_file(tmp_path / "raw" / WEIGHTS_FILE)
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())
    assert json.loads((tmp_path / "raw" / CONFIG_FILE).read_text())["atat_weights"] == "raw"
    assert load_run(tmp_path / "raw", CPU, use_ema=False).averaged is False
    with pytest.raises(AtatError, match="holds only the EMA weights"):
        load_run(home["exports"]["mdlm"], CPU, use_ema=False)


def test_force_replaces_only_an_earlier_export(home, tmp_path):
    run, out = home["runs"]["mdlm"], tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    export_run(run, out)
    with pytest.raises(AtatError, match="already holds an export"):
        export_run(run, out, ema=False)
    summary = export_run(run, out, ema=False, force=True)
    assert summary["replaced"] and json.loads((out / CONFIG_FILE).read_text())["atat_weights"] == "raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left
    # an export of an export, onto itself
    export_run(out, out, force=True)
    assert load_run(out, CPU).step == 4
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AtatError, match="is not an atat export"):
        export_run(run, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_commands_take_an_export_as_run(home, tmp_path, capsys):
    exports = home["exports"]
    assert main(["sample", str(exports["mdlm"]), "--json", "--seed", "0", "--length", "6", "--steps", "2",
                 "--judge", str(exports["ar"])]) == 0
    assert json.loads(capsys.readouterr().out)["gen_ppl"] is not None
    assert main(["eval", str(exports["ar"] / WEIGHTS_FILE), "--json", "--max-blocks", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "ar"
    assert main(["gif", str(exports["atat"]), "--json", "--steps", "2", "--length", "4",
                 "--out", str(tmp_path / "g.gif")]) == 0
    assert main(["heatmap", str(exports["atat"]), "--text", "the model", "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "g.gif").is_file() and (tmp_path / "h.png").is_file()
    capsys.readouterr()


def test_shared_and_strided_tensors_are_written_apart(home, tmp_path):
    # safetensors refuses tensors that share storage (tied weights) or are views with strides
    base = torch.arange(12.0).reshape(3, 4)
    weights = {"a": base, "tied": base, "transposed": base.T, "row": base[1]}
    write_export(tmp_path / "x", {"atat_format": 1}, weights, home["exports"]["mdlm"])
    back = load_file(tmp_path / "x" / WEIGHTS_FILE)
    assert all(torch.equal(back[k], v) for k, v in weights.items())


def test_exported_folder_is_self_contained(home, tmp_path):
    # copied to another place, it loads and samples the same
    moved = tmp_path / "moved"
    shutil.copytree(home["exports"]["mdlm"], moved)
    assert _ids(moved) == _ids(home["exports"]["mdlm"])
