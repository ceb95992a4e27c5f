"""Loading a checkpoint never runs code from it: files are read with weights_only=True, a crafted
file that asks for a Python object is refused before anything in it runs, and every genuine
checkpoint atat writes (MDLM, ATAT with its curriculum state, AR; step and best) still loads."""

import os

import pytest
import torch

from atat_cli.cli.app import main
from atat_cli.config import load_config
from atat_cli.errors import AtatError
from atat_cli.training import Trainer
from atat_cli.training.checkpoint import load_checkpoint, step_checkpoints

from conftest import FAST


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {}, "model": {}, "step": 1, "payload": _RunsCode(marker)}, path)
    return path


def test_crafted_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(AtatError, match="refused to load .* posix.system") as e:
        load_checkpoint(path)
    assert "nothing from the file was run" in e.value.hint
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["eval"], ["sample", "--length", "8", "--steps", "2"], ["gif", "--length", "8"],
                                  ["heatmap", "--text", "a b"]])
def test_commands_refuse_a_crafted_run(atat_home, capsys, argv):
    marker = atat_home / "ran"
    run_dir = atat_home / "runs" / "shared"
    _crafted(run_dir / "best.pt", marker)
    code = main(argv[:1] + [str(run_dir)] + argv[1:])
    err = capsys.readouterr().err
    assert code == 1 and "Error: refused to load" in err and "Traceback" not in err
    assert not marker.exists()


def test_resume_refuses_a_crafted_step_checkpoint(atat_home, capsys):
    marker = atat_home / "ran"
    run_dir = atat_home / "runs" / "shared"
    _crafted(run_dir / "step-00000002.pt", marker)
    code = main(["train", "--size", "test", *sum((["--set", o] for o in FAST), []), "--max-steps", "4",
                 "--out", str(run_dir), "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and "Error: refused to load" in err
    assert not marker.exists()


@pytest.mark.parametrize("method", ["mdlm", "atat", "ar"])
def test_genuine_checkpoints_load_with_weights_only(atat_home, method):
    cfg = load_config("test", method, overrides=FAST + ["train.max_steps=2", "train.eval_every=1"])
    Trainer(cfg, atat_home / method, progress=False, log=lambda *a, **k: None).run()
    for path in [*step_checkpoints(atat_home / method), atat_home / method / "best.pt"]:
        state = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything needs unpickling
        assert state["step"] >= 1 and state["model"]
    full = load_checkpoint(step_checkpoints(atat_home / method)[-1])
    assert {"optimizer", "scheduler", "loader", "objective", "rng"} <= set(full)
