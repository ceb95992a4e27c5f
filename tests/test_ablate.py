"""`atat ablate`: a small grid end to end, resumption, agreement with `atat eval`, bad grids."""

import json
from pathlib import Path

import pytest

from atat_cli.ablation import load_grid
from atat_cli.cli.app import main
from atat_cli.errors import AtatError
from atat_cli.runs import evaluate_run

GRID = """
baseline: base
variants:
  base: {method: mdlm}
  atat: {config: atat/seed, set: [atat.masking.temperature=0.5]}
"""
COMMON = ["--size", "test", "--data", "tinytext", "--tokens", "1024", "--seeds", "2", "--mc", "1",
          "--set", "train.precision=fp32", "--set", "train.batch_size=4", "--set", "train.eval_batches=1"]


def _ablate(capsys, grid_file, out, *extra):
    code = main(["ablate", "--grid", str(grid_file), "--out", str(out), "--json", *COMMON, *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_grid_end_to_end_and_resume(atat_home, capsys):
    grid = atat_home / "grid.yaml"
    grid.write_text(GRID)
    out = atat_home / "abl"
    report = _ablate(capsys, grid, out)
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"base", "atat"} and rows["base"]["vs_baseline"] == "baseline"
    assert rows["atat"]["vs_baseline"] in {"better", "worse", "within noise"}
    assert rows["atat"]["importance_spearman"] is not None and rows["base"]["importance_spearman"] is None
    assert all(r["tokens"] == 1024 for r in report["runs"])  # 8 steps x 4 x 32: the equal budget
    for name in ("report.md", "report.csv", "report.json", "val_curves.png"):
        assert (out / name).stat().st_size > 0

    # the report's numbers are `atat eval`'s numbers for the same runs
    for run in report["runs"]:
        assert run["checkpoint"].endswith("step-00000008.pt")  # the budget's checkpoint, not best.pt
        direct = evaluate_run(run["checkpoint"], split="valid", mc=1, seed=0)
        assert run["bits_per_byte"] == pytest.approx(direct["bits_per_byte"], rel=1e-9)

    # re-running redoes nothing: checkpoints untouched, same report
    ckpts = sorted(out.rglob("step-*.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    again = _ablate(capsys, grid, out)
    assert [p.stat().st_mtime_ns for p in sorted(out.rglob("step-*.pt"))] == stamps
    assert again["rows"] == report["rows"]


def test_interrupted_run_resumes(atat_home, capsys):
    grid = atat_home / "grid.yaml"
    grid.write_text(GRID)
    out = atat_home / "abl"
    # a run of the grid that stopped after 4 of its 8 steps
    code = main(["train", "--size", "test", "--data", "tinytext", "--max-steps", "4", "--out", str(out / "base" / "seed0"),
                 "--set", "train.precision=fp32", "--set", "train.batch_size=4", "--set", "train.save_every=2",
                 "--set", "train.eval_every=1", "--set", "train.eval_batches=1", "--json"])
    assert code == 0
    capsys.readouterr()
    _ablate(capsys, grid, out, "--variant", "base")
    steps = [json.loads(x)["step"] for x in (out / "base" / "seed0" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == list(range(1, 9))  # 1..4 from the first session, 5..8 resumed, none repeated


@pytest.mark.slow
def test_parallel_workers_train_every_run_once(atat_home, capsys):
    # the one-per-GPU path, exercised with two CPU worker processes
    grid = atat_home / "grid.yaml"
    grid.write_text(GRID)
    out = atat_home / "abl"
    report = _ablate(capsys, grid, out, "--seeds", "1", "--workers", "2")
    assert {r["variant"] for r in report["rows"]} == {"base", "atat"}
    for run in report["runs"]:
        steps = [json.loads(x)["step"] for x in (out / run["variant"] / "seed0" / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(x)]
        assert steps == list(range(1, 9))
        assert json.loads((out / run["variant"] / "seed0" / "ablate.json").read_text())["train_seconds"] > 0
    assert main(["ablate", "--grid", str(grid), "--out", str(out), *COMMON, "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_bad_grids(atat_home, tmp_path, capsys):
    with pytest.raises(AtatError, match="unknown grid"):
        load_grid("nosuchgrid")
    with pytest.raises(AtatError, match="unknown variant 'nope'"):
        load_grid("atat", only=["nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  a: {method: mdlm, set: [train.bogus=1]}\n")
    code = main(["ablate", "--grid", str(bad), *COMMON])
    err = capsys.readouterr().err
    assert code == 1 and "variant 'a': unknown config key 'train.bogus'" in err
    bad.write_text("variants:\n  a: {method: mdlm, sets: []}\n")
    with pytest.raises(AtatError, match="unknown key"):
        load_grid(str(bad))


def test_builtin_grid_resolves():
    grid = load_grid("atat")
    names = [v.name for v in grid.variants]
    assert names[0] == grid.baseline == "mdlm" and "ar" in names and "atat_seed" in names
    for v in grid.variants:
        v.resolve("tiny", [])


def test_sampling_grid(atat_home, capsys, tmp_path):
    from conftest import FAST

    def train(method):
        args = ["train", "--size", "test", "--method", method, "--max-steps", "3", "--json"]
        for item in FAST:
            args += ["--set", item]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out)["run"]

    mdlm, ar = train("mdlm"), train("ar")
    grid = tmp_path / "s.yaml"
    grid.write_text("variants:\n  conf_4: {sampler: confidence, steps: 4}\n  anc_8: {sampler: ancestral, steps: 8}\n"
                    "  imp_4: {sampler: importance, steps: 4}\n  thr: {sampler: confidence, adaptive: threshold, threshold: 0.5}\n")
    code = main(["ablate", "--sampling", mdlm, "--grid", str(grid), "--judge", ar, "--num-samples", "2",
                 "--length", "16", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = {r["variant"]: r for r in json.loads(captured.out)["rows"]}
    assert set(rows) == {"conf_4", "anc_8", "thr"}  # the importance order needs an ATAT run
    assert rows["conf_4"]["nfe"] == 4 and rows["conf_4"]["mean_steps"] == 4
    assert rows["anc_8"]["nfe"] <= 8
    for r in rows.values():
        assert r["gen_ppl"] > 0 and r["entropy"] >= 0
    grid.write_text("variants:\n  bad: {sampler: confidence, stepz: 4}\n")
    code = main(["ablate", "--sampling", mdlm, "--grid", str(grid)])
    assert code == 1 and "unknown key 'stepz'" in capsys.readouterr().err


def test_report_compares_with_the_baseline_in_tokens_seconds_and_percent():
    from atat_cli.ablation.report import build_report, markdown_table
    from atat_cli.ablation.runner import RunRecord

    def record(variant, seed, bpb, curve, tokens_per_s, own=None, objective=None):
        evaluation = {"bits_per_byte": bpb, "ppl": 2.0, "nelbo": 1.0, "checkpoint": "x", "objective": objective}
        if own is not None:
            evaluation["own_bits_per_byte"] = own
        return RunRecord(variant, "mdlm" if variant == "mdlm" else "atat", seed, Path("."), 10, 1000, 10.0,
                         tokens_per_s, evaluation, curve)

    records = [record("mdlm", 0, 1.00, [(500, 2.0), (1000, 1.5)], 100.0),
               record("mdlm", 1, 1.02, [(500, 2.1), (1000, 1.5)], 100.0),
               record("fast", 0, 0.90, [(500, 1.4), (1000, 1.2)], 50.0, own=0.85, objective="own-bound"),
               record("fast", 1, 0.92, [(500, 1.5), (1000, 1.2)], 50.0, own=0.87, objective="own-bound")]
    rows = {r["variant"]: r for r in build_report(records, "mdlm")["rows"]}
    fast = rows["fast"]
    assert fast["vs_baseline"] == "better" and abs(fast["change_pct"] - 100 * (0.91 - 1.01) / 1.01) < 1e-9
    assert fast["tokens_to_baseline"] == 500 and fast["seconds_to_baseline"] == 10.0  # 500 tokens at 50/s
    assert rows["mdlm"]["seconds_to_baseline"] == 10.0 and abs(fast["own_bits_per_byte"] - 0.86) < 1e-12
    table = markdown_table(build_report(records, "mdlm"))
    assert "own-bound" in table and "-9.9%" in table and "(-14.9%)" in table  # own 0.86 vs 1.01
    # an own-bound design is judged on its own bound, even when its uniform NELBO is worse
    semi = [record("semi", k, 1.10 + 0.02 * k, [(500, 1.3), (1000, 1.1)], 50.0, own=0.80 + 0.02 * k,
                   objective="own-bound") for k in (0, 1)]
    row = {r["variant"]: r for r in build_report(records[:2] + semi, "mdlm")["rows"]}["semi"]
    assert row["vs_baseline"] == "better" and row["change_pct"] > 0 > row["own_change_pct"]


def test_data_constrained_grid_repeats_a_fixed_slice(atat_home, capsys, tmp_path):
    """Variants with `epochs` train epochs x data.unique_tokens (the grid's `set`), on that slice only."""
    grid = tmp_path / "dc.yaml"
    grid.write_text("baseline: ar_e1\nset: [data.unique_tokens=256]\nvariants:\n"
                    "  ar_e1: {method: ar, epochs: 1}\n  ar_e2: {method: ar, epochs: 2}\n  mdlm_e2: {method: mdlm, epochs: 2}\n")
    out = atat_home / "dc"
    report = _ablate(capsys, grid, out, "--seeds", "1")  # --tokens 1024 is not used by epoch variants
    runs = {r["variant"]: r for r in report["runs"]}
    # 256 unique tokens = 8 blocks of 32 = 2 batches of 4 per epoch
    assert {name: (r["tokens"], r["steps"], r["epochs"]) for name, r in runs.items()} == {
        "ar_e1": (256, 2, 1), "ar_e2": (512, 4, 2), "mdlm_e2": (512, 4, 2)}
    assert "(2 epochs)" in (out / "report.md").read_text() and (out / "epochs.png").stat().st_size > 0
    assert "| epochs | tokens | ar | mdlm | lower |" in (out / "report.md").read_text()
    assert "unique_tokens: 256" in (out / "ar_e2" / "seed0" / "config.yaml").read_text()
    from atat_cli.config import load_config
    from atat_cli.training import Trainer
    cfg = load_config("test", "mdlm", overrides=["data.name=tinytext", "data.unique_tokens=256"])
    assert len(Trainer(cfg, progress=False, log=lambda *a, **k: None).train_blocks) == 8


def test_epochs_table_says_which_method_is_lower_beyond_the_spread():
    from atat_cli.ablation.report import epochs_table

    def row(method, epochs, bpb, std):
        return {"method": method, "epochs": epochs, "tokens": 100 * (epochs or 1), "bits_per_byte": bpb, "bits_per_byte_std": std}

    table = epochs_table({"rows": [row("ar", 1, 2.0, 0.1), row("mdlm", 1, 2.5, 0.1),
                                   row("ar", 4, 1.0, 0.2), row("mdlm", 4, 1.1, 0.2), row("ar", 16, 1.2, 0.01)]})
    lines = table.splitlines()
    assert lines[2].endswith("| ar |") and lines[3].endswith("| no difference |")
    assert lines[4].startswith("| 16 | 1,600 | 1.2000 ± 0.0100 | n/a |")
    assert epochs_table({"rows": [row("ar", None, 1.0, 0.0)]}) == ""


def test_unique_tokens_slice_and_its_bad_values(tmp_path):
    import numpy as np

    from atat_cli.config import load_config
    from atat_cli.training.trainer import unique_blocks

    blocks = np.arange(40).reshape(10, 4)
    assert unique_blocks(blocks, 9, "c").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # whole blocks only
    with pytest.raises(AtatError, match="more than the 40 tokens of c's training split"):
        unique_blocks(blocks, 44, "c")
    with pytest.raises(AtatError, match="less than one block"):
        load_config("test", "mdlm", overrides=["data.unique_tokens=10"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants:\n  a: {method: ar, epochs: 0}\n")
    with pytest.raises(AtatError, match="epochs must be a whole number >= 1"):
        load_grid(str(bad))
    bad.write_text("variants:\n  a: {method: ar, epochs: 2}\n")
    from atat_cli.ablation.runner import variant_tokens
    grid = load_grid(str(bad))
    with pytest.raises(AtatError, match="data.unique_tokens is not set"):
        variant_tokens(grid.variants[0], grid.variants[0].resolve("test", []), 1000)


def test_builtin_data_constrained_grid_budgets():
    from atat_cli.ablation.runner import variant_tokens

    grid = load_grid("data_constrained")
    budgets = {v.name: variant_tokens(v, v.resolve("screen", grid.overrides), 300000) for v in grid.variants}
    assert budgets["ar_e1"] == budgets["mdlm_e1"] == 102400 and budgets["mdlm_e64"] == 64 * 102400
