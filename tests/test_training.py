"""The training loop: exact resume, a golden loss trajectory, locks, and safe checkpoints."""

import json

import pytest
import torch

from atat_cli.config import load_config
from atat_cli.errors import AtatError
from atat_cli.training import Trainer
from atat_cli.training.checkpoint import step_checkpoints
from atat_cli.training.lock import RunLock

from conftest import FAST


def _losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _train(run_dir, steps, method="mdlm", resume=False, extra=()):
    cfg = load_config("test", method, overrides=FAST + [f"train.max_steps={steps}", *extra])
    return Trainer(cfg, run_dir, resume=resume, progress=False, log=lambda *a, **k: None).run()


@pytest.mark.parametrize("method", ["mdlm", "ar"])
def test_resume_is_exact(atat_home, method):
    # N steps then N more after a resume equal 2N steps in one go: same losses, same weights.
    constant = ["optim.schedule=constant"]
    _train(atat_home / "straight", 6, method, extra=constant)
    _train(atat_home / "split", 3, method, extra=constant)
    _train(atat_home / "split", 6, method, resume=True, extra=constant)
    assert _losses(atat_home / "straight") == _losses(atat_home / "split")
    a = torch.load(step_checkpoints(atat_home / "straight")[-1], weights_only=True)
    b = torch.load(step_checkpoints(atat_home / "split")[-1], weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["loader"] == b["loader"]


# Recorded from this implementation (seed 0, fp32, the conftest corpus). A change to the
# maths of the forward process, the NELBO, the model or the optimiser moves these numbers.
GOLDEN_MDLM = [4.752703, 5.224601, 4.261208, 5.420853, 3.264479]


def test_golden_loss_trajectory(atat_home):
    _train(atat_home / "golden", 5)
    losses = [loss for _, loss in _losses(atat_home / "golden")]
    assert losses == pytest.approx(GOLDEN_MDLM, rel=1e-4)


def test_validation_loss_falls(atat_home):
    _train(atat_home / "learn", 40, extra=["train.eval_every=10", "optim.lr=3e-3"])
    records = [json.loads(x) for x in (atat_home / "learn" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_nelbo"] for r in records if "val_nelbo" in r]
    assert len(val) == 4 and val[-1] < val[0]


def test_checkpoint_rotation_and_best(atat_home):
    _train(atat_home / "rot", 8, extra=["train.keep_last=2", "train.eval_every=2"])
    names = [p.name for p in step_checkpoints(atat_home / "rot")]
    assert names == ["step-00000006.pt", "step-00000008.pt"]
    best = torch.load(atat_home / "rot" / "best.pt", weights_only=True)
    assert "optimizer" not in best and "ema" in best  # best.pt is for eval/sampling only


def test_locked_run_folder_is_refused(atat_home):
    with RunLock(atat_home / "busy"):
        with pytest.raises(AtatError, match="in use by another training"):
            _train(atat_home / "busy", 2)


def test_existing_run_needs_resume(atat_home):
    _train(atat_home / "once", 2)
    with pytest.raises(AtatError, match="already holds a training run"):
        _train(atat_home / "once", 4)
    with pytest.raises(AtatError, match="nothing to resume"):
        _train(atat_home / "never", 2, resume=True)


def test_failed_save_keeps_previous_checkpoint(atat_home, monkeypatch):
    _train(atat_home / "safe", 2)
    before = step_checkpoints(atat_home / "safe")
    assert [p.name for p in before] == ["step-00000002.pt"]
    content = before[0].read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        _train(atat_home / "safe", 4, resume=True)
    assert before[0].read_bytes() == content
    assert [p.name for p in (atat_home / "safe").iterdir() if ".tmp" in p.name] == []


def test_interrupt_saves_and_stops(atat_home, monkeypatch):
    from atat_cli.training import trainer as trainer_module

    cfg = load_config("test", overrides=FAST + ["train.max_steps=50", "train.save_every=100"])
    t = Trainer(cfg, atat_home / "ctrlc", progress=False, log=lambda *a, **k: None)
    real_step = trainer_module.Trainer.train_step

    def step_then_interrupt(self):
        out = real_step(self)
        if self.step == 3:
            self._on_sigint(2, None)  # what Ctrl-C does
        return out

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step_then_interrupt)
    result = t.run()
    assert result.interrupted and result.step == 3
    assert [p.name for p in step_checkpoints(atat_home / "ctrlc")] == ["step-00000003.pt"]


def test_missing_tracker_is_a_clear_error(atat_home, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(AtatError, match="needs the tensorboard package"):
        _train(atat_home / "tb", 2, extra=["train.tensorboard=true"])


@pytest.mark.slow
def test_torchrun_two_processes(atat_home):
    """DDP over gloo on the CPU: rank 0 alone writes, the run completes and evaluates."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "atat_cli.cli.app",
           "train", "--size", "test", "--max-steps", "4", "--out", str(atat_home / "ddp"), "--json"]
    for item in FAST:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"step": 4') == 1  # one summary, from rank 0
    records = [json.loads(x) for x in (atat_home / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert train[0]["tokens"] == 2 * 4 * 32  # both ranks' batches count
    assert [p.name for p in step_checkpoints(atat_home / "ddp")][-1] == "step-00000004.pt"


def test_losing_the_lock_race_never_deletes_the_holders_folder(atat_home, monkeypatch):
    # Two trainings started at once on a new folder: the other one creates it and takes the lock
    # between our start and our lock attempt. Our failure must leave its files alone.
    import atat_cli.training.trainer as trainer_module

    run_dir = atat_home / "race"
    holder = RunLock(run_dir)

    class LateLock(RunLock):
        def __enter__(self):
            holder.__enter__()
            (run_dir / "config.yaml").write_text("held")
            return super().__enter__()

    monkeypatch.setattr(trainer_module, "RunLock", LateLock)
    with pytest.raises(AtatError, match="in use by another training"):
        _train(run_dir, 2)
    assert (run_dir / "config.yaml").read_text() == "held" and (run_dir / ".lock").is_file()
    holder.__exit__(None, None, None)


def test_trainer_is_ready_when_built(atat_home):
    # validate() and train_step() work before (and without) run(); nothing is written
    cfg = load_config("test", "mdlm", overrides=FAST + ["train.max_steps=3"])
    trainer = Trainer(cfg, progress=False)
    before = trainer.validate()["val_nelbo"]
    for _ in range(3):
        metrics = trainer.train_step()
    assert trainer.step == 3 and "nelbo" in metrics and "grad_norm" in metrics
    assert trainer.validate()["val_nelbo"] != before
    assert not (atat_home / "runs").exists()


def test_a_failing_compile_falls_back_to_eager_and_says_so(atat_home, monkeypatch):
    def compile_that_fails(model):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")
        return compiled

    _train(atat_home / "eager", 3)
    monkeypatch.setattr(torch, "compile", compile_that_fails)
    logged = []
    cfg = load_config("test", "mdlm", overrides=FAST + ["train.max_steps=3", "train.compile=true"])
    Trainer(cfg, atat_home / "fallback", progress=False, log=logged.append).run()
    assert any("torch.compile failed (RuntimeError: no C++ compiler found)" in line for line in logged)
    assert _losses(atat_home / "fallback") == _losses(atat_home / "eager")  # the same batches and noise
