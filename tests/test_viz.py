"""Pictures: denoising frames and GIFs, importance and training heatmaps, and their bad inputs."""

import json
import math

import numpy as np
import pytest
import torch

from atat_cli.cli.app import main
from atat_cli.errors import AtatError
from atat_cli.sampling.samplers import StepRecord
from atat_cli.viz import gif as G
from atat_cli.viz import heatmaps as H

from conftest import FAST

MASK = 99


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _train(capsys, method, *extra):
    args = ["train", "--size", "test", "--method", method, "--max-steps", "4", "--json", *extra]
    for item in FAST:
        args += ["--set", item]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return json.loads(out)["run"]


def _trajectory(n_prompt=3, n_targets=12, steps=5, seed=0):
    """A synthetic sampler trajectory: targets revealed in a random order over `steps` steps."""
    rng = np.random.default_rng(seed)
    final = np.concatenate([np.arange(n_prompt), 10 + rng.integers(0, 20, n_targets)])
    start = final.copy()
    start[n_prompt:] = MASK
    order = n_prompt + rng.permutation(n_targets)
    chunks = np.array_split(order, steps)
    tokens, records = start.copy(), []
    for k, chunk in enumerate(chunks):
        tokens[chunk] = final[chunk]
        unmasked = np.zeros(len(final), dtype=bool)
        unmasked[chunk] = True
        confidence = np.where(unmasked, rng.uniform(0.05, 1.0, len(final)), 0.0)
        records.append(StepRecord(k, k + 1, torch.tensor(tokens)[None], torch.tensor(unmasked)[None],
                                  torch.tensor(confidence, dtype=torch.float32)[None],
                                  torch.tensor(rng.uniform(0, 1, len(final)), dtype=torch.float32)[None]))
    pieces = [f" w{int(i)}" if i < 10 else f" tok{int(i)}" for i in final]
    pieces[5] = "line\nbreak"  # a token holding a line break
    return start, final, records, pieces


def _blank_share(frame, renderer, cells):
    """Share of a token's pixels painted in the masked-box colour."""
    share = []
    for cell in cells:
        x0, y0, x1, y1 = renderer.box(cell)
        patch = frame[y0:y1, x0:x1].reshape(-1, 3)
        share.append(np.all(patch == G.BLANK_FILL, axis=1).mean())
    return float(np.mean(share))


def test_frames_from_a_trajectory():
    start, final, records, pieces = _trajectory()
    layout = G.TokenLayout.build(pieces, start == MASK, cols=24)
    assert layout.rows >= 3  # wrapped at 24 characters and broken at the line break
    frames = G.render_frames(layout, start, records, mask_id=MASK, steps=5)
    assert len(frames) == len(records) + 1  # the start, then one frame per step
    assert len({f.shape for f in frames}) == 1 and frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
    renderer = G.FrameRenderer(layout)
    targets = np.flatnonzero(start == MASK)
    # first frame: every target is a blank box; last frame: none is; prompt tokens never are
    assert all(_blank_share(frames[0], renderer, layout.cells[i]) > 0.5 for i in targets)
    assert all(_blank_share(frames[-1], renderer, layout.cells[i]) == 0 for i in targets)
    assert all(_blank_share(f, renderer, layout.cells[0]) == 0 for f in frames)
    # after step k exactly the tokens revealed so far are not blank, and the new ones are outlined
    for k, rec in enumerate(records):
        revealed = (rec.tokens[0].numpy() != MASK)
        for i in targets:
            assert (_blank_share(frames[k + 1], renderer, layout.cells[i]) == 0) == revealed[i]
        new = np.flatnonzero(rec.unmasked[0].numpy())
        x0, y0, _, _ = renderer.box(layout.cells[new[0]][0])
        assert tuple(frames[k + 1][y0 - 1, x0 + 4]) == G.HIGHLIGHT
    # every k steps: ceil(steps / k) frames after the start, the last one always included
    thinned = G.render_frames(layout, start, records, mask_id=MASK, every=2)
    assert len(thinned) == 1 + math.ceil(len(records) / 2)
    assert np.array_equal(thinned[-1][G.HEADER_H:], frames[-1][G.HEADER_H:])
    # the colour follows the chosen value: importance paints differently from confidence
    by_importance = G.render_frames(layout, start, records, mask_id=MASK, color="importance")
    assert not np.array_equal(by_importance[-1], frames[-1])


def test_layout_is_stable_and_wraps_at_token_boundaries():
    pieces = ["Hello", " world", ",", " this", " is", " a", " long", " sentence", "\n", "Next", " line"]
    layout = G.TokenLayout.build(pieces, [True] * len(pieces), cols=16)
    for cells in layout.cells:
        for cell in cells:
            assert 0 <= cell.col and cell.col + cell.width <= 16
    assert layout.cells[9][0].col == 0 and layout.cells[9][0].row == layout.cells[8][0].row + 1  # after "\n"
    rows = [c.row for cells in layout.cells for c in cells]
    assert rows == sorted(rows)  # reading order
    assert layout.cells[2][0].text == ","


def test_frames_draw_tokens_of_any_bytes():
    # a byte-level model samples control characters and separators (U+001C, U+0085...) that the
    # font's text layout refuses to draw: they become U+FFFD, the newline still breaks the row
    pieces = ["a\x1cb", "\x85", "\x00\x1e", "c\nd", "\u2028"]
    layout = G.TokenLayout.build(pieces, [True] * len(pieces), cols=16)
    texts = [c.text for cells in layout.cells for c in cells]
    assert texts[:3] == ["a\ufffdb", "\ufffd", "\ufffd\ufffd"] and layout.rows == 2
    frame = G.FrameRenderer(layout).render(np.arange(5), np.zeros(5, bool), np.ones(5, bool),
                                           np.full(5, 0.5), "step 1", 1.0)
    assert frame.ndim == 3


def test_gif_command_end_to_end(atat_home, capsys):
    import imageio.v3 as iio

    run_dir = _train(capsys, "atat")
    out = atat_home / "denoise.gif"
    frames_dir = atat_home / "frames"
    code, stdout, err = run(capsys, "gif", "--prompt", "the model", "--length", "20", "--steps", "6",
                            "--out", out, "--frames", frames_dir, "--color", "importance", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    gif = iio.imread(out, index=None)
    assert summary["steps"] == 6 and summary["every"] == 1
    assert gif.shape[0] == summary["frames"] == 7  # start + 6 steps
    assert gif.shape[1:3] == (summary["size"][1], summary["size"][0])
    pngs = sorted(frames_dir.glob("frame_*.png"))
    assert len(pngs) == 7 and len({iio.imread(p).shape for p in pngs}) == 1
    # the final frame is held longer than the others
    durations = [iio.immeta(out, index=i)["duration"] for i in (0, 6)]
    assert durations[1] > 2 * durations[0]
    # the library path with every k steps, on the newest run (no RUN argument)
    from atat_cli.runs import load_run
    from atat_cli.sampling import SamplerSettings

    trained = load_run(run_dir, torch.device("cpu"))
    frames, info = G.denoising_frames(trained, "the model", SamplerSettings(sampler="confidence", steps=6),
                                      length=20, every=4)
    assert len(frames) == 1 + math.ceil(6 / 4) == info["frames"]
    # blocks through the dual cache, with remasking: 2 blocks of 10 positions x 6 steps each
    code, stdout, err = run(capsys, "gif", "--prompt", "the model", "--length", "20", "--steps", "6",
                            "--sampler", "remdm", "--eta", "0.1", "--block-size", "10", "--cache", "dual",
                            "--out", atat_home / "blocks.gif", "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 12
    # mp4 needs imageio-ffmpeg, which is optional: a clear error with the pip hint when absent
    import importlib.util

    code, _, err = run(capsys, "gif", "--prompt", "the model", "--length", "8", "--steps", "2",
                       "--format", "mp4", "--out", atat_home / "d.mp4")
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        assert code == 1 and "pip install imageio-ffmpeg" in err
    else:
        assert code == 0 and (atat_home / "d.mp4").stat().st_size > 0


def test_plot_importance_draws_the_matrix(tmp_path):
    rng = np.random.default_rng(1)
    matrix = rng.uniform(0.2, 0.8, (len(H.TIMES), 7))
    pieces = ["The", " list", " is", "\n", " sorted", ".", " "]
    plotted = H.plot_importance(matrix, pieces, H.TIMES, tmp_path / "imp.png")
    assert np.allclose(plotted["importance"], matrix)
    assert np.allclose(plotted["mean"], matrix.mean(axis=0))
    assert (tmp_path / "imp.png").stat().st_size > 1000
    assert [H.label_of(p) for p in pieces] == ["The", "list", "is", "\u21b5", "sorted", ".", "\u2423"]
    with pytest.raises(AtatError):
        H.plot_importance(matrix[:, :3], pieces, H.TIMES, tmp_path / "bad.png")


def test_importance_heatmap_of_a_seed_atat_run(atat_home, capsys):
    run_dir = _train(capsys, "atat", "--config", "atat/seed")
    out = atat_home / "imp.png"
    code, stdout, err = run(capsys, "heatmap", run_dir, "--text", "the model masks", "--out", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["tokens"]) == len("the model masks") and result["t"] == list(H.TIMES)  # byte tokens
    # the seeds' estimator scores the clean tokens at the schedule's masking rate m(t)
    from atat_cli.diffusion import build_schedule
    from atat_cli.runs import load_run

    trained = load_run(run_dir, torch.device("cpu"))
    schedule = build_schedule(trained.cfg.diffusion.schedule, trained.cfg.diffusion.eps)
    ids = torch.tensor(trained.data.tokenizer().encode("the model masks"))[None]
    level = schedule.mask_rate(torch.tensor([0.3], dtype=torch.float64)).float()
    with torch.no_grad():
        expected = trained.importance(ids, level)[0].numpy()
    assert np.allclose(result["importance"][2], expected, atol=1e-4)
    assert out.stat().st_size > 1000


def test_importance_heatmap_of_a_valid_atat_run_rates_masked_tokens(atat_home, capsys):
    run_dir = _train(capsys, "atat", "--set", "atat.importance.loss_weight=1")
    code, stdout, err = run(capsys, "heatmap", run_dir, "--text", "the model", "--out", atat_home / "x.png", "--json")
    assert code == 0, err
    matrix = np.array(json.loads(stdout)["importance"])
    assert matrix.shape == (len(H.TIMES), len("the model")) and ((matrix >= 0) & (matrix <= 1)).all()
    from atat_cli.runs import load_run

    trained = load_run(run_dir, torch.device("cpu"))
    estimator, mask_id = trained.importance, trained.data.vocab_size
    assert estimator.input == "x_t"
    ids = torch.tensor(trained.data.tokenizer().encode("the model"))[None]
    with torch.no_grad():
        # rate 1: every context is all masks, so token j's rating is the estimator on all masks
        all_masked = H._importance_when_masked(estimator, ids, torch.tensor([1.0]), mask_id)[0]
        assert torch.allclose(all_masked, estimator(torch.full_like(ids, mask_id), torch.tensor([1.0]))[0])
        # rate ~0: only token j itself is masked
        alone = H._importance_when_masked(estimator, ids, torch.tensor([1e-9]), mask_id)[0]
        j = 3
        x_j = ids.clone()
        x_j[0, j] = mask_id
        assert torch.allclose(alone[j], estimator(x_j, torch.tensor([1e-9]))[0, j])


def test_training_heatmaps_draw_the_log(tmp_path):
    records = []
    for step in range(10, 110, 10):
        rec = {"step": step, "tokens": step * 64, "loss": 5.0 - step / 100, "loss_low": 4.0 + step / 1000,
               "loss_mid": None if step == 30 else 5.0, "loss_high": 6.0 - step / 100,
               "grad_low": 2.0, "grad_mid": 1.0 + step / 100, "grad_high": None if step == 50 else 0.5,
               "curriculum_level": -1.0 + step / 50, "curriculum_stage": "easy" if step < 40 else "medium"}
        records.append(rec)
        if step % 50 == 0:
            records.append({"step": step, "val_nelbo": 4.5 - step / 200, "val_bpb": 2.0})
    plotted = H.plot_training(records, tmp_path / "training.png")
    train = [r for r in records if "loss" in r]
    expected_loss = np.array([[np.nan if r[f"loss_{b}"] is None else r[f"loss_{b}"] for r in train] for b in H.BANDS])
    assert np.array_equal(plotted["loss"], expected_loss, equal_nan=True)
    assert np.isnan(plotted["loss"][1, 2]) and np.isnan(plotted["grad"][2, 4])  # blank cells, not zeros
    assert np.allclose(plotted["grad"][1], [r["grad_mid"] for r in train])
    assert np.allclose(plotted["curriculum"], [r["curriculum_level"] for r in train])
    assert np.allclose(plotted["steps"], range(10, 110, 10))
    curves = H.plot_curves(records, tmp_path / "curves.png")
    assert np.allclose(curves["train"][0], [r["tokens"] for r in train])
    assert np.allclose(curves["train"][1], [r["loss"] for r in train])
    assert np.allclose(curves["val"], [[50 * 64, 100 * 64], [4.25, 4.0]])  # val steps put on the token axis
    # an MDLM log (no curriculum) draws the two band heatmaps only
    plain = [{k: v for k, v in r.items() if not k.startswith("curriculum")} for r in records]
    assert H.plot_training(plain, tmp_path / "plain.png")["curriculum"] is None


def test_training_heatmap_command_and_bad_inputs(atat_home, capsys):
    run_dir = _train(capsys, "mdlm")
    out = atat_home / "pics" / "training.png"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "heatmap", "--training", "--out", out, "--json")  # newest run
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["steps"] == [1, 2, 3, 4] and not summary["curriculum"]
    assert out.stat().st_size > 1000 and (out.parent / "curves.png").stat().st_size > 1000
    # an importance heatmap needs an ATAT run
    code, _, err = run(capsys, "heatmap", run_dir, "--text", "the model", "--out", atat_home / "i.png")
    assert code == 1 and "no importance estimator" in err and "--training" in err
    code, _, err = run(capsys, "gif", run_dir, "--color", "importance", "--length", "8", "--out", atat_home / "i.gif")
    assert code == 1 and "importance estimator" in err
    # an empty log, and a folder without one
    empty = atat_home / "runs" / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    code, _, err = run(capsys, "heatmap", empty, "--training", "--out", atat_home / "t.png")
    assert code == 1 and "is empty" in err
    (empty / "metrics.jsonl").unlink()
    code, _, err = run(capsys, "heatmap", empty, "--training", "--out", atat_home / "t.png")
    assert code == 1 and "no metrics log" in err
    # unwritable outputs fail before any work, in one line
    code, _, err = run(capsys, "heatmap", run_dir, "--training", "--out", atat_home / "missing" / "t.png")
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    blocker = atat_home / "a_file"
    blocker.write_text("x")
    code, _, err = run(capsys, "gif", run_dir, "--out", blocker / "d.gif")
    assert code == 1 and "is not a folder" in err
    code, _, err = run(capsys, "heatmap", run_dir, "--training", "--out", atat_home)
    assert code == 1 and ".png" in err
    # choose exactly one of --text and --training
    code, _, err = run(capsys, "heatmap", run_dir)
    assert code == 1 and "--training" in err
