"""The command line end to end on a tiny corpus, its conventions, and every bad input."""

import json
import re

import pytest

from atat_cli.cli.app import COMMANDS, main

from conftest import FAST


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _commands_in_help(text):
    """Command names listed in the 'Commands' panel of a Typer help page."""
    panel = text.split("Commands", 1)[1]
    return {m.group(1) for m in re.finditer(r"^[│|]\s+([a-z][a-z-]*)\s{2,}", panel, re.M)}


def test_help_matches_command_table(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    top = {group or name for group, name, _ in COMMANDS}
    assert _commands_in_help(out) == top
    for group in {g for g, _, _ in COMMANDS if g}:
        code, out, _ = run(capsys, group, "--help")
        assert _commands_in_help(out) == {name for g, name, _ in COMMANDS if g == group}


def test_help_is_fast_to_import():
    import subprocess
    import sys

    code = "import sys, atat_cli.cli.app; print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # heavy libraries load inside commands only


def _train_args(*extra):
    args = ["train", "--size", "test", "--max-steps", "4", "--json"]
    for item in FAST:
        args += ["--set", item]
    return args + list(extra)


def test_train_then_eval_end_to_end(atat_home, capsys):
    code, out, err = run(capsys, *_train_args())
    assert code == 0, err
    summary = json.loads(out)
    assert summary["step"] == 4 and not summary["interrupted"]
    assert summary["run"].endswith("runs/mdlm-test-tinytext")
    code, out, err = run(capsys, "eval", "--json", "--mc", "2")  # newest run
    assert code == 0, err
    result = json.loads(out)
    for key in ("nelbo", "ppl", "bits_per_token", "bits_per_byte", "tokens", "bytes", "mask_accuracy"):
        assert key in result
    assert set(result["mask_accuracy"]) == {"low", "mid", "high"}
    assert result["ppl"] == pytest.approx(2.718281828 ** result["nelbo"])
    # a second training does not overwrite the first
    code, out, _ = run(capsys, *_train_args())
    assert json.loads(out)["run"].endswith("runs/mdlm-test-tinytext-2")
    # resume continues the newest
    code, out, err = run(capsys, *_train_args("--resume", "--max-steps", "6"))
    assert code == 0, err
    assert json.loads(out)["step"] == 6
    # eval is deterministic for a fixed seed, on the test split too
    first = json.loads(run(capsys, "eval", str(atat_home / "runs/mdlm-test-tinytext"), "--split", "test", "--json")[1])
    again = json.loads(run(capsys, "eval", str(atat_home / "runs/mdlm-test-tinytext"), "--split", "test", "--json")[1])
    assert first["nelbo"] == again["nelbo"] and first["split"] == "test"


def test_ar_train_and_eval(atat_home, capsys):
    code, out, err = run(capsys, *_train_args("--method", "ar"))
    assert code == 0, err
    run_dir = json.loads(out)["run"]
    code, out, err = run(capsys, "eval", run_dir, "--json")
    result = json.loads(out)
    assert result["method"] == "ar" and result["nelbo"] > 0 and result["mc"] is None


def test_human_output_goes_to_stdout_logs_to_stderr(atat_home, capsys):
    code, out, err = run(capsys, *[a for a in _train_args() if a != "--json"])
    assert code == 0
    assert "done" in out and "Run folder" in err
    code, out, err = run(capsys, "eval")
    assert "bits/byte" in out and "NELBO (uniform masking)" in out


def test_config_commands(tmp_path, capsys):
    code, out, _ = run(capsys, "config", "list")
    assert code == 0 and "sizes/tiny" in out
    code, out, _ = run(capsys, "config", "show", "small")
    assert "n_layers: 12" in out and "# Transformer (or DiMamba) blocks." in out
    dest = tmp_path / "my.yaml"
    assert run(capsys, "config", "copy", "tiny", str(dest))[0] == 0
    assert "n_layers: 8" in dest.read_text()
    code, _, err = run(capsys, "config", "copy", "tiny", str(dest))
    assert code == 1 and "exists" in err


def _expect_error(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    return err


def test_bad_inputs(atat_home, capsys):
    base = ["train", "--size", "test", "--set", "train.precision=fp32"]
    _expect_error(capsys, ["train", "--data", "nosuchcorpus", "--size", "test"], "unknown corpus 'nosuchcorpus'")
    _expect_error(capsys, ["train", "--size", "huge"], "unknown size 'huge'")
    _expect_error(capsys, base + ["--max-steps", "0"], "max_steps must be at least 1")
    err = _expect_error(capsys, base + ["--set", "train.bogus=1"], "unknown config key 'train.bogus'")
    assert "Hint:" in err
    _expect_error(capsys, ["eval", str(atat_home / "missing")], "no such run folder or checkpoint")
    _expect_error(capsys, ["eval"], "no trained run found")
    (atat_home / "runs" / "broken").mkdir(parents=True)
    (atat_home / "runs" / "broken" / "best.pt").write_bytes(b"not a checkpoint")
    _expect_error(capsys, ["eval", str(atat_home / "runs" / "broken")], "corrupt or unreadable checkpoint")
    (atat_home / "runs" / "empty").mkdir()
    _expect_error(capsys, ["eval", str(atat_home / "runs" / "empty")], "holds no checkpoint")


def test_bad_text_files(atat_home, capsys):
    empty = atat_home / "empty.txt"
    empty.write_text("")
    _expect_error(capsys, ["data", "fetch", str(empty), "--name", "e", "--tokenizer", "bytes"], "empty")
    binary = atat_home / "latin1.txt"
    binary.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    _expect_error(capsys, ["data", "fetch", str(binary), "--name", "b", "--tokenizer", "bytes"], "UTF-8")


def test_locked_run_via_cli(atat_home, capsys):
    from atat_cli.training.lock import RunLock

    with RunLock(atat_home / "runs" / "held"):
        _expect_error(capsys, _train_args("--out", str(atat_home / "runs" / "held")), "in use by another training")


def test_debug_shows_traceback(atat_home, capsys, monkeypatch):
    from atat_cli.errors import AtatError

    monkeypatch.setenv("ATAT_DEBUG", "0")  # --debug sets it in this process: undone after the test
    with pytest.raises(AtatError):
        main(["--debug", "train", "--size", "huge"])


def test_train_ends_with_a_sample(atat_home, capsys):
    code, out, err = run(capsys, *_train_args())
    assert code == 0, err
    sample = json.loads(out)["sample"]
    assert isinstance(sample, str) and len(sample) > 0
    code, out, _ = run(capsys, *_train_args("--no-sample"))
    assert code == 0 and "sample" not in json.loads(out)
    text_args = [a for a in _train_args("--out", str(atat_home / "runs" / "text")) if a != "--json"]
    code, out, err = run(capsys, *text_args)
    assert code == 0, err
    assert "a sample of 64 tokens" in out


def test_error_text_is_never_read_as_markup(atat_home, capsys, monkeypatch):
    import atat_cli.config

    def fails(*args, **kwargs):  # e.g. gloo's "[/path/pair.cc:553]" in a distributed failure
        raise RuntimeError("[/w/gloo/pair.cc:553] connection closed")

    monkeypatch.setattr(atat_cli.config, "load_config", fails)
    code, _, err = run(capsys, "train", "--size", "test")
    assert code == 1 and "Error: RuntimeError: [/w/gloo/pair.cc:553] connection closed" in err
