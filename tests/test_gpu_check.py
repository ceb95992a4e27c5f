"""benchmarks/gpu_check.py in its CI-size form: every part runs on a CPU and lands in the report."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # spawns the two ablate workers: ~20 s on a 2-core CPU
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU form and its CUDA-skipped note")
def test_quick_report_on_cpu(atat_home):
    gpu_check = load_script()
    md, js = atat_home / "r.md", atat_home / "r.json"
    assert gpu_check.main(["--quick", "--no-tests", "--data", "tinytext", "--out", str(md), "--json", str(js)]) == 0
    text = md.read_text()
    assert gpu_check.CUDA_SKIPPED in text
    assert gpu_check.TARGET in text and "not measured" in text
    for section in ("## Training", "## Sampling", "## Ablate"):
        assert section in text
    # numbers with their units in each table
    assert re.search(r"\| DiT \| \w+ \| eager \| sdpa \| 8 × 32 \| [\d.]+ \| [\d.]+ \(n=3\) \| [\d,]+ \| [\d.]+% \| ok \|", text)
    assert "skipped: no CUDA" in text

    res = json.loads(js.read_text())
    trained = [r for r in res["training"] if r["status"] == "ok"]
    assert {r["model"] for r in trained} == {"DiT", "AR"}
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in trained)
    assert res["ratios"]
    assert len(res["sampling"]) == 3 and all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["nfe"] >= 1
                                             for r in res["sampling"])
    ablate = res["ablate"]
    assert ablate["status"] == "ok", ablate["status"]
    assert ablate["workers"] == 2 and {v["variant"] for v in ablate["variants"]} == {"mdlm", "ar"}
    assert all(v["bits_per_byte"] > 0 for v in ablate["variants"])
