"""A run folder is never overwritten or mixed up by mistake: --out a foreign folder or a file is
refused untouched, an atat run that died before its first checkpoint starts over cleanly,
every step appears once in metrics.jsonl after a resume, and half-written temp files of dead
processes are removed. Also the small input checks that protect outputs (gif suffix, [MASK]*N)."""

import json
import subprocess
import sys

import pytest
import yaml

from atat_cli.cli.app import main
from atat_cli.config import load_config
from atat_cli.data.tokenizer import Tokenizer
from atat_cli.errors import AtatError
from atat_cli.sampling import build_layout
from atat_cli.training import Trainer
from atat_cli.training.checkpoint import step_checkpoints

from conftest import FAST


def _cfg(steps, *extra):
    return load_config("test", "mdlm", overrides=FAST + [f"train.max_steps={steps}", *extra])


def _train(run_dir, steps, resume=False, *extra):
    return Trainer(_cfg(steps, *extra), run_dir, resume=resume, progress=False, log=lambda *a, **k: None).run()


def _steps(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def test_a_foreign_folder_is_refused_untouched(atat_home):
    folder = atat_home / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (folder / "config.yaml").write_text("hello: world\n")
    with pytest.raises(AtatError, match="is not empty and is not an atat run folder"):
        _train(folder, 2)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["config.yaml", "notes.txt"]
    assert (folder / "config.yaml").read_text() == "hello: world\n"


def test_out_pointing_at_a_file_is_a_clear_error(atat_home):
    target = atat_home / "afile"
    target.write_text("x")
    with pytest.raises(AtatError, match="is a file"):
        _train(target, 2)
    assert target.read_text() == "x"


def test_a_run_that_never_saved_starts_over(atat_home):
    run_dir = atat_home / "unsaved"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_cfg(2).to_dict()))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    _train(run_dir, 2)
    assert _steps(run_dir) == [1, 2]


def test_every_step_appears_once_after_a_resume(atat_home):
    run_dir = atat_home / "resumed"
    _train(run_dir, 4, False, "train.save_every=2")
    step_checkpoints(run_dir)[-1].unlink()  # as if killed after logging steps 3-4, before saving step 4
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # and a line torn by the kill
    _train(run_dir, 4, True, "train.save_every=2")
    assert _steps(run_dir) == [1, 2, 3, 4]


def test_temp_files_of_dead_saves_are_removed(atat_home):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = atat_home / "tmpfiles" / f".step-00000002.pt.tmp-{int(dead.stdout)}"
    stale.parent.mkdir()
    stale.write_bytes(b"half a checkpoint")
    _train(stale.parent, 2)
    assert not stale.exists() and step_checkpoints(stale.parent)


def test_gif_suffix_must_match_the_format(atat_home, capsys):
    code = main(["gif", "--out", str(atat_home / "x.png")])
    err = capsys.readouterr().err
    assert code == 1 and "does not end in .gif" in err
    assert not (atat_home / "x.png").exists()


@pytest.mark.parametrize("prompt", ["a [MASK]*-3 b", "a [MASK]* b", "a [MASK]*+2 b"])
def test_malformed_mask_counts_are_errors(prompt):
    with pytest.raises(AtatError, match="malformed count"):
        build_layout(prompt, Tokenizer.bytes(), 257, seq_len=32)


def test_well_formed_mask_counts_still_parse():
    layout = build_layout("The [MASK]*3 sat.", Tokenizer.bytes(), 257, seq_len=32)
    assert layout.ids.count(257) == 3


def test_a_full_disk_during_a_save_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import torch

    from atat_cli.training import checkpoint

    path = tmp_path / "step-00000002.pt"
    checkpoint.save_atomic({"model": {}, "config": {}}, path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(AtatError, match="no space left on the device") as e:
        checkpoint.save_atomic({"model": {}, "config": {}}, path)
    assert "previous checkpoint is intact" in e.value.hint
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_set_with_broken_yaml_is_one_clear_error():
    from atat_cli.config import parse_override

    with pytest.raises(AtatError, match="not valid YAML"):
        parse_override("optim.lr=[1")


def test_a_prompt_that_is_not_utf8_is_one_clear_error():
    with pytest.raises(AtatError, match="not valid UTF-8"):
        build_layout("caf\udce9", Tokenizer.bytes(), 257, seq_len=32)


def test_data_info_checks_the_name_and_the_token_files(atat_home, capsys):
    code = main(["data", "info", "../data/tinytext"])
    assert code == 1 and "invalid corpus name" in capsys.readouterr().err
    train_bin = atat_home / "data" / "tinytext" / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:100])
    code = main(["data", "info", "tinytext"])
    assert code == 1 and "does not match meta.json" in capsys.readouterr().err


def test_config_copy_reads_only_shipped_presets(tmp_path, capsys):
    import os

    from atat_cli.config import CONFIG_DIR

    secret = tmp_path / "secret.yaml"
    secret.write_text("not a preset\n")
    outside = os.path.relpath(secret, CONFIG_DIR).removesuffix(".yaml")  # ../../.../secret
    code = main(["config", "copy", outside, str(tmp_path / "copy.yaml")])
    assert code == 1 and "unknown preset" in capsys.readouterr().err
    assert not (tmp_path / "copy.yaml").exists()
    code = main(["config", "copy", "tiny", str(tmp_path)])
    assert code == 1 and "is a folder" in capsys.readouterr().err


def test_a_corpus_with_another_tokenizer_of_the_same_size_is_refused(atat_home, capsys):
    import shutil

    import torch

    from atat_cli.data import ensure_prepared
    from atat_cli.runs import evaluate_run, load_run

    from conftest import write_corpus

    a = ensure_prepared("bpe-a", files=[write_corpus(atat_home / "a", seed=1)], tokenizer="bpe", vocab_size=300,
                        progress=False)
    b = ensure_prepared("bpe-b", files=[write_corpus(atat_home / "b", seed=2, n_docs=60)], tokenizer="bpe",
                        vocab_size=300, progress=False)
    assert a.meta["tokenizer"] == b.meta["tokenizer"] and a.tokenizer_fingerprint != b.tokenizer_fingerprint
    run_dir = atat_home / "runs" / "on-a"
    _train(run_dir, 2, False, "data.name=bpe-a")
    with pytest.raises(AtatError, match="prepared with another tokenizer"):
        evaluate_run(run_dir, data="bpe-b", mc=1)
    shutil.rmtree(a.path / "tokenizer")
    shutil.copytree(b.path / "tokenizer", a.path / "tokenizer")  # the run's corpus re-tokenized since
    with pytest.raises(AtatError, match="another tokenizer than the one run"):
        load_run(run_dir, torch.device("cpu"))


CHILD = """
import sys, time
import torch
from atat_cli.cli.app import main
real_save, calls = torch.save, []
def save_then_hang(state, f):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint, while the first is safe on disk
        f.write(b"half a checkpoint")
        f.flush()
        open(sys.argv[1], "w").close()  # tell the test: kill me now
        time.sleep(120)
    return real_save(state, f)
torch.save = save_then_hang
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_a_run_that_evaluates_and_resumes(atat_home, capsys):
    import os
    import signal
    import time

    run_dir = atat_home / "runs" / "killed"
    marker = atat_home / "kill-now"
    args = ["train", "--size", "test", *sum((["--set", o] for o in FAST), []), "--set", "train.eval_every=0",
            "--max-steps", "6", "--out", str(run_dir), "--no-sample", "--json"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the training never reached its second save"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert [p.name for p in step_checkpoints(run_dir)] == ["step-00000002.pt"]
    assert any(".tmp-" in p.name for p in run_dir.iterdir())  # the half-written save
    code = main(["eval", str(run_dir), "--mc", "1", "--json"])  # the newest checkpoint: step 2
    assert code == 0 and json.loads(capsys.readouterr().out)["step"] == 2
    code = main(args + ["--resume"])
    assert code == 0 and json.loads(capsys.readouterr().out)["step"] == 6
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert not any(".tmp-" in p.name for p in run_dir.iterdir())


def test_a_runaway_layout_is_refused_before_any_work():
    with pytest.raises(AtatError, match="more than 64 contexts of 32"):
        build_layout("a [MASK]*100000 b", Tokenizer.bytes(), 257, seq_len=32)
    with pytest.raises(AtatError, match="more than 64 contexts"):
        build_layout("a", Tokenizer.bytes(), 257, seq_len=32, length=64 * 32)
    assert len(build_layout("a", Tokenizer.bytes(), 257, seq_len=32, length=64 * 32 - 1).ids) == 64 * 32


def test_ablate_with_an_unknown_corpus_fails_before_any_work(atat_home, capsys):
    code = main(["ablate", "--data", "nosuchcorpus", "--size", "test", "--out", str(atat_home / "grid")])
    err = capsys.readouterr().err
    assert code == 1 and "unknown corpus 'nosuchcorpus'" in err and "training" not in err
    assert not (atat_home / "grid").exists()
