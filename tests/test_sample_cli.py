"""`atat sample` end to end on tiny runs trained here, and its bad inputs."""

import json

import pytest

from atat_cli.cli.app import main

from conftest import FAST


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train(capsys, *extra):
    args = ["train", "--size", "test", "--max-steps", "4", "--json"]
    for item in FAST:
        args += ["--set", item]
    code, out, err = run(capsys, *args, *extra)
    assert code == 0, err
    return json.loads(out)["run"]


def test_sample_end_to_end(atat_home, capsys):
    ar_run = train(capsys, "--method", "ar")
    atat_run = train(capsys, "--method", "atat")
    mdlm_run = train(capsys)  # the newest run: what `atat sample` picks by default

    code, out, err = run(capsys, "sample", "--prompt", "The model", "--steps", "4", "--num-samples", "2",
                         "--seed", "7", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["run"] == mdlm_run and result["sampler"] == "ancestral/4" and result["seed"] == 7
    assert len(result["samples"]) == 2
    for s in result["samples"]:
        assert s["text"].startswith("The model") and s["steps"] == 4 and 1 <= s["nfe"] <= 4 and s["entropy"] >= 0
    for key in ("nfe", "seconds", "tokens_per_second"):
        assert result[key] > 0
    again = json.loads(run(capsys, "sample", "--prompt", "The model", "--steps", "4", "--num-samples", "2",
                           "--seed", "7", "--json")[1])
    assert [s["text"] for s in again["samples"]] == [s["text"] for s in result["samples"]]

    # adaptive steps, infilling, a judge, and the human-readable output
    code, out, err = run(capsys, "sample", mdlm_run, "--prompt", "The [MASK]*4 sat", "--adaptive", "threshold",
                         "--threshold", "0.5", "--judge", ar_run, "--json", "--seed", "0")  # a fixed seed: a
    # random one can draw EOS first, leaving no continuation to score
    assert code == 0, err
    result = json.loads(out)
    assert result["sampler"] == "confidence+threshold(0.5)" and result["samples"][0]["text"].endswith(" sat")
    assert result["gen_ppl"] > 1 and "entropy" in result and result["judge"] == ar_run
    code, out, err = run(capsys, "sample", "--prompt", "The model", "--sampler", "uncertainty", "--metric", "margin",
                         "--schedule", "cosine", "--steps", "3", "--score", "--judge", ar_run)
    assert code == 0, err
    assert "The model" in out and "NFE" in out and "gen. perplexity" in out

    # the importance order on an ATAT run (its own estimator), and AR sampling with a KV cache
    code, out, err = run(capsys, "sample", atat_run, "--sampler", "importance", "--steps", "4", "--length", "8",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["sampler"] == "importance/4"
    code, out, err = run(capsys, "sample", ar_run, "--prompt", "The", "--length", "10", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "ar" and result["samples"][0]["text"].startswith("The") and result["nfe"] == 10

    # semi-autoregressive blocks through the dual cache (Fast-dLLM), and remasking
    code, out, err = run(capsys, "sample", mdlm_run, "--prompt", "The", "--length", "12", "--block-size", "4",
                         "--cache", "dual", "--sampler", "remdm", "--eta", "0.1", "--steps", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["cache"] == "dual" and result["block_size"] == 4 and result["sampler"] == "remdm-cap(0.1)/3"
    assert all(s["steps"] == 9 for s in result["samples"])  # 3 blocks x 3 steps

    # errors that need a run
    for argv, message in (
        (["--prompt", "x" * 40], "longer than the model's context"),
        (["--sampler", "importance"], "run has no importance estimator; train with --method atat"),
        ([ar_run, "--prompt", "a [MASK] b"], "cannot fill"),
        (["--judge", mdlm_run], "not an AR run"),
        (["--cache", "window"], "unknown cache 'window'"),
        (["--cache", "prefix"], "--cache prefix is exact only for a block-causal run"),
        ([ar_run, "--cache", "dual"], "an AR run always decodes with its own KV cache"),
    ):
        code, out, err = run(capsys, "sample", *argv)
        assert code == 1 and out == "" and message in err, (argv, err)


@pytest.mark.parametrize("argv, message", [
    (["--sampler", "nope"], "unknown sampler 'nope'"),
    (["--adaptive", "threshold", "--threshold", "1.5"], "threshold must be in (0, 1]"),
    (["--adaptive", "threshold", "--threshold", "0"], "threshold must be in (0, 1]"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--steps", "4", "--adaptive", "threshold"], "either --steps N or --adaptive"),
    (["--score"], "--score needs a judge"),
])
def test_bad_sampler_options(atat_home, capsys, argv, message):
    code, out, err = run(capsys, "sample", *argv)
    assert code == 1 and out == "" and "Error:" in err and message in err


def test_run_without_checkpoint(atat_home, capsys):
    empty = atat_home / "runs" / "empty"
    empty.mkdir(parents=True)
    code, _, err = run(capsys, "sample", str(empty))
    assert code == 1 and "holds no checkpoint" in err
    code, _, err = run(capsys, "sample")  # no runs at all
    assert code == 1 and "no trained run found" in err
