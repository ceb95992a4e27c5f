"""lm-evaluation-harness adapter: AR log-likelihoods exact, the diffusion conditional bound against
quadrature, a local lm-eval task end to end, bad input."""

import json
import math

import pytest
import torch

from atat_cli.cli.app import main
from atat_cli.diffusion import build_schedule, time_of
from atat_cli.errors import AtatError
from atat_cli.objectives.base import shift_right
from atat_cli.runs import load_run
from atat_cli.runs.harness import conditional_loglikelihood, rolling_windows

from conftest import FAST, write_corpus

lm_eval = pytest.importorskip("lm_eval", reason="the lmeval extra")

DOCS = [{"context": "The cat sat on the", "continuation": " mat."},
        {"context": "def main():\n    return", "continuation": " 0"},
        {"context": "import os\nimport", "continuation": " sys"}]
TASK = """task: atat_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from atat_cli.data import ensure_prepared

    home = tmp_path_factory.mktemp("harness")
    with pytest.MonkeyPatch.context() as mp:  # atat_home's setup, once for the module's two runs
        mp.setenv("ATAT_DATA_DIR", str(home / "data"))
        mp.setenv("ATAT_RUNS_DIR", str(home / "runs"))
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        ensure_prepared("tinytext", files=[write_corpus(home / "src")], tokenizer="bytes", progress=False)
        for method in ("mdlm", "ar"):
            args = ["train", "--size", "test", "--method", method, "--max-steps", "6", "--json", "--no-sample",
                    "--out", str(home / method)]
            for item in FAST:
                args += ["--set", item]
            assert main(args) == 0
        yield home


def test_rolling_windows_score_every_token_once_with_context():
    ids = list(range(10, 30))
    pairs = rolling_windows(ids, 8, bos_id=0)
    assert [t for _, window in pairs for t in window] == ids
    assert pairs[0] == ([0], ids[:7])
    assert all(len(c) + len(w) <= 8 and c for c, w in pairs)
    assert pairs[1] == (ids[6:7], ids[7:14]) and pairs[-1] == (ids[12:14], ids[14:])  # the text just before each


def test_ar_loglikelihood_is_exact(runs):
    trained = load_run(runs / "ar", torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(0, 257, (n,), generator=g).tolist(), torch.randint(0, 257, (k,), generator=g).tolist())
             for n, k in ((5, 3), (5, 3), (10, 1), (0, 4))]
    got = conditional_loglikelihood(trained, pairs, batch_size=2)
    for (context, continuation), (ll, greedy) in zip(pairs, got):
        x = torch.tensor([context + continuation])
        with torch.no_grad():
            logp = torch.log_softmax(trained.model(shift_right(x, trained.data.eos_id)).float(), -1)[0]
        positions = range(len(context), len(context) + len(continuation))
        assert ll == pytest.approx(sum(float(logp[i, x[0, i]]) for i in positions), abs=1e-4)
        assert greedy == all(int(logp[i].argmax()) == int(x[0, i]) for i in positions)


def test_diffusion_bound_matches_quadrature(runs):
    """One continuation token: the estimate's expectation is the integral over v of
    m(t) w(t) (-log p(c | x with c masked, t)), here computed on a 400-point grid."""
    trained = load_run(runs / "mdlm", torch.device("cpu"))
    cfg = trained.cfg
    context, token = [72, 101, 108, 108, 111, 32, 119, 111, 114], 108
    schedule = build_schedule(cfg.diffusion.schedule, cfg.diffusion.eps)
    v = (torch.arange(400) + 0.5) / 400
    t = time_of(v, cfg.diffusion.eps)
    rate = schedule.mask_rate(t)
    x = torch.tensor(context + [trained.data.vocab_size]).repeat(400, 1)
    with torch.no_grad():
        nll = -torch.log_softmax(trained.model(x, rate).float()[:, -1, : trained.data.vocab_size], -1)[:, token]
    exact = -float((rate * schedule.loss_weight(t) * nll).mean())
    draws = [conditional_loglikelihood(trained, [(context, [token])], mc=64, seed=s)[0][0] for s in range(12)]
    mean = sum(draws) / len(draws)
    se = (sum((d - mean) ** 2 for d in draws) / (len(draws) - 1) / len(draws)) ** 0.5
    assert abs(mean - exact) < 4 * se + 1e-3, (mean, exact, se)
    assert exact < 0


def test_local_lm_eval_task_end_to_end(runs, capsys, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "atat_tiny.yaml").write_text(TASK.format(path=docs))
    for method in ("ar", "mdlm"):
        code = main(["eval", str(runs / method), "--tasks", "atat_tiny", "--task-dir", str(tmp_path / "tasks"),
                     "--mc", "4", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        result = json.loads(captured.out)["results"]["atat_tiny"]
        assert 0 <= result["acc,none"] <= 1 and result["perplexity,none"] > 1
        if method == "ar":  # the harness's number is the direct one: exp(-mean log-likelihood)
            trained = load_run(runs / "ar", torch.device("cpu"))
            tok = trained.data.tokenizer()
            pairs = [(tok.encode(d["context"]), tok.encode(d["continuation"])) for d in DOCS]
            direct = [ll for ll, _ in conditional_loglikelihood(trained, pairs)]
            assert result["perplexity,none"] == pytest.approx(math.exp(-sum(direct) / len(direct)), rel=1e-4)
    code = main(["eval", str(runs / "mdlm"), "--tasks", "atat_tiny", "--task-dir", str(tmp_path / "tasks"), "--mc", "2"])
    assert code == 0 and "perplexity" in capsys.readouterr().out


def test_bad_harness_input(runs, capsys, tmp_path, monkeypatch):
    code = main(["eval", str(runs / "mdlm"), "--tasks", "no_such_task_xyz", "--task-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "unknown lm-eval task 'no_such_task_xyz'" in err and "Traceback" not in err
    code = main(["eval", str(runs / "mdlm"), "--tasks", "x", "--task-dir", str(tmp_path / "missing")])
    assert code == 1 and "task folder not found" in capsys.readouterr().err
    trained = load_run(runs / "mdlm", torch.device("cpu"))
    with pytest.raises(AtatError, match="longer than the run's context"):
        conditional_loglikelihood(trained, [([1], [5] * (trained.cfg.model.seq_len + 1))])
    trained.cfg.diffusion.parameterization = "sedd"
    with pytest.raises(AtatError, match="this run is sedd"):
        conditional_loglikelihood(trained, [([1], [5])])
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)
    code = main(["eval", str(runs / "mdlm"), "--tasks", "atat_tiny"])
    err = capsys.readouterr().err
    assert code == 1 and "lm-eval is not installed" in err and "lmeval" in err


class _Request:  # what lm-eval hands a model: an Instance with .args
    def __init__(self, *args):
        self.args = args


def test_rolling_and_generation_requests(runs):
    from atat_cli.runs.harness import harness_model

    trained = load_run(runs / "ar", torch.device("cpu"))
    tok, seq_len = trained.data.tokenizer(), trained.cfg.model.seq_len
    text = "the model masks tokens and learns to fill them back in " * 3  # > one context of 32
    [total] = harness_model(trained).loglikelihood_rolling([_Request(text)])
    direct = conditional_loglikelihood(trained, rolling_windows(tok.encode(text), seq_len, trained.data.eos_id))
    assert len(direct) > 1 and total == pytest.approx(sum(ll for ll, _ in direct), rel=1e-6)
    for method in ("ar", "mdlm"):
        lm = harness_model(load_run(runs / method, torch.device("cpu")))
        [out] = lm.generate_until([_Request("the model", {"until": ["e"], "max_gen_toks": 8})])
        assert "e" not in out and len(out) <= 8  # bytes: at most one character per generated token
