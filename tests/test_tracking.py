"""The optional trackers (the `tracking` extra) really run: TensorBoard event files and W&B's
offline run folder are read back and hold what metrics.jsonl holds, at the same steps. Each
test needs its package and is skipped without it, except the one for a missing package."""

import json
import struct
import sys
import time

import pytest

from atat_cli.cli.app import main
from atat_cli.config import load_config
from atat_cli.training import Trainer
from atat_cli.training.sinks import WANDB_ID_FILE, tracker_scalars

from conftest import FAST


def _train(run_dir, steps, resume=False, extra=()):
    cfg = load_config("test", "mdlm", overrides=FAST + ["train.eval_every=2", f"train.max_steps={steps}", *extra])
    return Trainer(cfg, run_dir, resume=resume, progress=False, log=lambda *a, **k: None).run()


def _metrics(run_dir):
    """{tag: [(step, value), ...]} from metrics.jsonl, named as the trackers name them."""
    series = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in tracker_scalars(record).items():
            series.setdefault(tag, []).append((record["step"], value))
    return series


def _kill_after_last_record(run_dir):
    """What a kill between step N's log line and its checkpoint leaves: records past the last
    checkpoint. Removing the final checkpoint makes the resume go back one save."""
    checkpoints = sorted(run_dir.glob("step-*.pt"))
    checkpoints[-1].unlink()


# --- TensorBoard ---------------------------------------------------------------------------


def _tensorboard(run_dir):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_the_metrics(atat_home):
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    run = atat_home / "tb"
    _train(run, 4, extra=["train.tensorboard=true"])
    logged, expected = _tensorboard(run), _metrics(run)
    assert {"train/loss", "train/lr", "val/nelbo", "val/bpb"} <= set(logged)
    assert set(logged) == set(expected)
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in logged["val/nelbo"]] == [2, 4]
    for tag, points in expected.items():  # same steps, same values (TensorBoard stores float32)
        assert [s for s, _ in logged[tag]] == [s for s, _ in points], tag
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_tensorboard_resume_shows_each_step_once(atat_home):
    # As metrics.jsonl does, a resume drops what was logged after its checkpoint: step 3 was
    # logged, then "killed" before its checkpoint; the resume from step 2 logs 3 again.
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    run = atat_home / "tb-resume"
    _train(run, 3, extra=["train.tensorboard=true"])
    _kill_after_last_record(run)
    _train(run, 5, resume=True, extra=["train.tensorboard=true"])
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    logged, expected = _tensorboard(run), _metrics(run)
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4, 5]
    assert [step for step, _ in logged["val/nelbo"]] == [2, 4, 5]  # not the first run's final step 3
    for tag, points in expected.items():
        assert [s for s, _ in logged[tag]] == [s for s, _ in points], tag
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


# --- Weights & Biases, offline ----------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode, with every folder it may write to inside tmp_path."""
    pytest.importorskip("wandb", reason="the tracking extra (wandb) is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-state" / name.lower()))
    return monkeypatch


def _wandb_records(path):
    """The records of a run-*.wandb file, decoded with wandb's own protobuf. The file is a
    LevelDB-style log: a 7-byte header (b":W&B", magic 0xBEE1, version), then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _finished_records(folder, timeout=30.0):
    """The records of an offline run folder's log once it holds the run's exit record: finish()
    can return before W&B's service process has written the whole log (seen with wandb 0.31)."""
    (log,) = folder.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_wandb_records(log))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _wandb_run(folder):
    """(run record, {tag: [(step, value), ...]}) of one finished offline run folder."""
    run, series = None, {}
    for record in _finished_records(folder):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            for item in record.history.item:
                tag = item.key or "/".join(item.nested_key)
                if not tag.startswith("_"):  # W&B's own _step, _runtime, _timestamp
                    series.setdefault(tag, []).append((record.history.step.num, json.loads(item.value_json)))
    return run, series


def _offline_runs(wandb_dir):
    return sorted((wandb_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow  # starts W&B's service process
def test_wandb_offline_run_holds_the_metrics(atat_home, wandb_offline, capsys):
    wandb_offline.setenv("WANDB_DIR", str(atat_home / "wandb-dir"))  # W&B's files go there when set
    (atat_home / "wandb-dir").mkdir()
    run_dir = atat_home / "runs" / "wb"
    argv = ["train", "--size", "test", "--max-steps", "4", "--json", "--no-sample", "--out", str(run_dir)]
    for item in FAST + ["train.eval_every=2", "train.wandb_project=atat-test"]:
        argv += ["--set", item]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["step"] == 4  # W&B's messages stay off stdout
    assert not (run_dir / "wandb").exists()
    (folder,) = _offline_runs(atat_home / "wandb-dir")
    run, logged = _wandb_run(folder)
    assert run.project == "atat-test" and run.display_name == "wb"
    assert run.run_id == (run_dir / WANDB_ID_FILE).read_text().strip()
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["method"] == "mdlm" and config["train"]["max_steps"] == 4  # the run's whole config
    expected = _metrics(run_dir)
    assert {"train/loss", "val/nelbo"} <= set(logged)
    assert set(logged) == set(expected)
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in logged["val/nelbo"]] == [2, 4]
    for tag, points in expected.items():
        assert logged[tag] == [(s, pytest.approx(v, rel=1e-9)) for s, v in points], tag


@pytest.mark.slow  # starts W&B's service process twice
def test_wandb_resume_continues_the_same_run(atat_home, wandb_offline):
    # By default W&B's files go into the run folder. A resume continues the same W&B run (one
    # id, so `wandb sync` of both folders makes one run) and does not send again the steps W&B
    # already holds: step 3, logged before the "kill", is in the first folder only.
    run_dir = atat_home / "wb-resume"
    _train(run_dir, 3, extra=["train.wandb_project=atat-test"])
    _kill_after_last_record(run_dir)
    _train(run_dir, 5, resume=True, extra=["train.wandb_project=atat-test"])
    first, second = (_wandb_run(folder) for folder in _offline_runs(run_dir))
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert first[0].run_id == second[0].run_id == run_id
    assert [step for step, _ in first[1]["train/loss"]] == [1, 2, 3]
    assert [step for step, _ in second[1]["train/loss"]] == [4, 5]
    resumed = dict(_metrics(run_dir)["train/loss"])
    assert dict(first[1]["train/loss"] + second[1]["train/loss"]) == pytest.approx(resumed, rel=1e-9)


def _sinks(run_dir, **train):
    from types import SimpleNamespace

    from atat_cli.training.sinks import MetricSinks

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = SimpleNamespace(**({"tensorboard": False, "wandb_project": ""} | train))
    return MetricSinks(run_dir, cfg, {"method": "mdlm"})


@pytest.mark.slow  # starts W&B's service process
def test_wandb_run_of_a_failed_training_is_marked_failed(atat_home, wandb_offline):
    sinks = _sinks(atat_home / "wb-fail", wandb_project="atat-test")
    with pytest.raises(RuntimeError):
        try:
            sinks.write({"step": 1, "loss": 2.5, "label": "text"})
            raise RuntimeError("the training failed")
        finally:  # as the trainer closes its sinks
            sinks.close()
    (folder,) = _offline_runs(atat_home / "wb-fail")
    _, logged = _wandb_run(folder)
    assert logged == {"train/loss": [(1, 2.5)]}  # labels are not scalars
    exits = [r.exit.exit_code for r in _finished_records(folder) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]


def test_wandb_that_cannot_start_is_a_clear_error(atat_home, wandb_offline):
    import wandb

    from atat_cli.errors import AtatError

    def refuse(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    wandb_offline.setattr(wandb, "init", refuse)
    with pytest.raises(AtatError, match="W&B could not start a run: api_key not configured") as e:
        _sinks(atat_home / "wb-refused", wandb_project="atat-test")
    assert "wandb login" in e.value.hint and "WANDB_MODE=offline" in e.value.hint
    assert not (atat_home / "wb-refused" / WANDB_ID_FILE).exists()  # no id for a run that never started


# --- a tracker that is not installed ------------------------------------------------------------


@pytest.mark.parametrize("setting, modules, package", [
    ("train.tensorboard=true", ["tensorboard", "torch.utils.tensorboard"], "tensorboard"),
    ("train.wandb_project=atat-test", ["wandb"], "wandb"),
])
def test_missing_tracker_is_one_clear_error(atat_home, capsys, monkeypatch, setting, modules, package):
    for name in modules:  # None in sys.modules makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)
    run_dir = atat_home / "runs" / "missing"
    argv = ["train", "--size", "test", "--max-steps", "2", "--json", "--no-sample", "--out", str(run_dir)]
    for item in FAST + [setting]:
        argv += ["--set", item]
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert errors == [f"Error: {setting.split('=')[0]} needs the {package} package, which is not installed",
                      'Hint: pip install -e ".[tracking]"']
    assert "Traceback" not in captured.err and captured.out == ""
    assert not run_dir.exists()  # nothing was trained, nothing is left behind
