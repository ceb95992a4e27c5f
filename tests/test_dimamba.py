"""DiMamba: the chunked selective scan against a sequential reference, the model's contract, and
training, evaluation, sampling and ATAT with `model.backbone=dimamba` end to end."""

import json

import pytest
import torch

from atat_cli.cli.app import main
from atat_cli.config import load_config
from atat_cli.errors import AtatError
from atat_cli.models import DiMamba, build_model
from atat_cli.models import selective_scan as selective_scan_module
from atat_cli.models.selective_scan import _mamba_kernel, chunked_scan, selective_scan
from atat_cli.training import Trainer

from conftest import FAST

V = 40


def sequential_scan(u, delta, A, B, C, D):
    """The recurrence as written, one position at a time (Mamba's `selective_scan_ref`):
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t."""
    batch, T, d_inner = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    for t in range(T):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, dim=1)  # (B, T, Di)


def scan_inputs(batch=2, T=37, d_inner=5, d_state=3, delta_max=0.5, a_max=3.0, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    tensors = (torch.randn(batch, T, d_inner, generator=g),  # u
               torch.rand(batch, T, d_inner, generator=g) * delta_max + 1e-3,  # delta > 0
               -torch.rand(d_inner, d_state, generator=g) * a_max - 0.1,  # A < 0
               torch.randn(batch, T, d_state, generator=g),  # B
               torch.randn(batch, T, d_state, generator=g),  # C
               torch.randn(d_inner, generator=g))  # D
    return [t.requires_grad_(requires_grad) for t in tensors]


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 32, 64])
def test_chunked_scan_matches_the_sequential_scan(chunk):
    # T = 37 is a multiple of none of the chunk sizes but 1, and smaller than 64.
    inputs = scan_inputs()
    assert torch.allclose(chunked_scan(*inputs, chunk=chunk), sequential_scan(*inputs), atol=1e-5, rtol=0)


def test_chunked_scan_is_stable_under_strong_decay():
    # delta * |A| up to ~100 per step: the closed form e^{S_t} sum e^{-S_s} (...) would overflow
    # fp32 within a chunk; the prefix scan only multiplies decays in (0, 1].
    inputs = scan_inputs(delta_max=5.0, a_max=20.0, seed=1)
    y = chunked_scan(*inputs, chunk=32)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, sequential_scan(*inputs), atol=1e-5, rtol=0)


def test_chunked_scan_gradients_match_the_sequential_scan():
    inputs = scan_inputs(batch=2, T=11, d_inner=3, d_state=2, requires_grad=True)
    weights = torch.randn(2, 11, 3, generator=torch.Generator().manual_seed(5))  # a loss that weighs every output
    (chunked_scan(*inputs, chunk=4) * weights).sum().backward()  # chunks of 4, 4, 3: checkpointed
    ours = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    (sequential_scan(*inputs) * weights).sum().backward()
    for name, a, b in zip("u delta A B C D".split(), ours, (t.grad for t in inputs)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name


@pytest.mark.slow  # compiling forward and backward takes half a minute on 2 cores
def test_compiled_scan_matches_the_sequential_scan_with_gradients():
    inputs = scan_inputs(batch=2, T=11, d_inner=3, d_state=2, requires_grad=True)
    weights = torch.randn(2, 11, 3, generator=torch.Generator().manual_seed(5))
    y = chunked_scan(*inputs, chunk=4, compiled=True)
    assert not selective_scan_module._COMPILE_FAILED, selective_scan_module._COMPILE_FAILED
    (y * weights).sum().backward()
    ours = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    reference = sequential_scan(*inputs)
    (reference * weights).sum().backward()
    assert torch.allclose(y, reference, atol=1e-5, rtol=0)
    for name, a, b in zip("u delta A B C D".split(), ours, (t.grad for t in inputs)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name


def test_compile_failure_falls_back_to_the_eager_scan(monkeypatch):
    def broken(*args):
        raise torch._dynamo.exc.TorchDynamoException("no C++ compiler found")

    monkeypatch.setattr(selective_scan_module, "_compiled_step", lambda: broken)
    monkeypatch.setattr(selective_scan_module, "_COMPILE_FAILED", [])
    inputs = scan_inputs()
    with pytest.warns(RuntimeWarning, match="compiling the scan failed"):
        y = chunked_scan(*inputs, chunk=8, compiled=True)
    assert torch.allclose(y, sequential_scan(*inputs), atol=1e-5, rtol=0)


def test_scan_under_bf16_autocast_keeps_the_recurrence_in_fp32():
    inputs = scan_inputs()
    reference = chunked_scan(*inputs)
    u16 = inputs[0].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = selective_scan(u16, *inputs[1:])
    assert y.dtype == torch.bfloat16  # the caller's dtype back
    exact = chunked_scan(u16.float(), *inputs[1:])  # the same rounded input, all in fp32
    assert torch.allclose(y.float(), exact, atol=0.05, rtol=0.02)
    assert torch.allclose(y.float(), reference, atol=0.1, rtol=0.05)


@pytest.mark.skipif(_mamba_kernel() is None or not torch.cuda.is_available(),
                    reason="needs mamba-ssm and a CUDA device")
def test_mamba_kernel_agrees_with_the_pytorch_scan():  # pragma: no cover - depends on the machine
    inputs = [t.cuda() for t in scan_inputs(batch=3, T=100, d_inner=16, d_state=8)]
    fused = selective_scan(*inputs, kernel="auto")
    ours = selective_scan(*inputs, kernel="torch")
    assert torch.allclose(fused, ours, atol=1e-4, rtol=1e-4)
    cfg = load_config("test", overrides=["model.backbone=dimamba", "train.precision=fp32"])
    model = DiMamba(cfg.model, V).cuda()
    x, level = torch.randint(0, V + 1, (2, 32), device="cuda"), torch.rand(2, device="cuda")
    import atat_cli.models.selective_scan as scan_module
    with_kernel = model(x, level)
    kernel, scan_module._mamba_kernel = scan_module._mamba_kernel, lambda: None
    try:
        assert torch.allclose(with_kernel, model(x, level), atol=1e-4)
    finally:
        scan_module._mamba_kernel = kernel


def random_dimamba():
    cfg = load_config("test", overrides=["model.backbone=dimamba", "train.precision=fp32"])
    torch.manual_seed(0)
    model = build_model(cfg, V)
    assert isinstance(model, DiMamba)
    with torch.no_grad():  # leave the zero init so the output depends on the input
        for name, p in model.named_parameters():
            if "A_log" not in name and "dt_proj" not in name:
                p.normal_(0, 0.3)
    return model.eval(), cfg


@torch.no_grad()
def test_dimamba_is_time_conditioned_bidirectional_and_answers_at_positions():
    model, cfg = random_dimamba()
    x = torch.randint(0, V, (2, cfg.model.seq_len))
    level = torch.tensor([0.5, 0.2])
    base = model(x, level)
    assert base.shape == (2, cfg.model.seq_len, V + 1)
    assert not torch.allclose(base, model(x, torch.tensor([0.9, 0.2])))
    for changed, seen_at in ((-1, 0), (0, -1)):  # the first position sees the last and vice versa
        x2 = x.clone()
        x2[0, changed] = (x2[0, changed] + 1) % V
        assert not torch.allclose(base[0, seen_at], model(x2, level)[0, seen_at], atol=1e-4)
    at = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.allclose(model(x, level, at=at), base[at][:, :V], atol=1e-5)
    fresh = DiMamba(cfg.model, V)
    assert torch.all(fresh(x, level) == 0)  # zero-initialised head, as the DiT's


def _losses(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_dimamba_training_lowers_the_validation_loss(atat_home):
    cfg = load_config("test", "mdlm", overrides=FAST + ["model.backbone=dimamba", "train.max_steps=40",
                                                        "train.eval_every=10", "optim.lr=3e-3"])
    Trainer(cfg, atat_home / "learn", progress=False, log=lambda *a, **k: None).run()
    val = [r["val_nelbo"] for r in _losses(atat_home / "learn") if "val_nelbo" in r]
    assert len(val) == 4 and val[-1] < val[0]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train(capsys, *extra):
    args = ["train", "--size", "test", "--max-steps", "4", "--json", "--set", "model.backbone=dimamba"]
    for item in FAST:
        args += ["--set", item]
    code, out, err = run(capsys, *args, *extra)
    assert code == 0, err
    return json.loads(out)


def test_dimamba_run_round_trip_eval_and_sample(atat_home, capsys):
    summary = train(capsys)
    assert summary["step"] == 4
    code, out, err = run(capsys, "eval", summary["run"], "--json", "--mc", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["nelbo"] > 0 and result["ppl"] > 1
    code, out, err = run(capsys, "sample", summary["run"], "--prompt", "The model", "--steps", "4",
                         "--num-samples", "2", "--seed", "3", "--json")
    assert code == 0, err
    samples = json.loads(out)["samples"]
    assert len(samples) == 2 and all(s["text"].startswith("The model") for s in samples)
    code, _, err = run(capsys, "sample", summary["run"], "--length", "8", "--block-size", "4", "--cache", "dual")
    assert code != 0 and "DiMamba backbone has no cached decoding" in err and "--cache none" in err


def test_atat_trains_with_dimamba(atat_home, capsys):
    summary = train(capsys, "--method", "atat")
    assert summary["step"] == 4
    records = _losses(atat_home / "runs" / "atat-test-tinytext")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    cfg = load_config("test", "atat", overrides=["model.backbone=dimamba"])
    model = build_model(cfg, V)
    assert isinstance(model.denoiser, DiMamba) and model.estimator is not None


def test_bad_backbone_settings_are_refused():
    with pytest.raises(AtatError, match="unknown model.backbone 'mamba'") as e:
        load_config("test", overrides=["model.backbone=mamba"])
    assert "dit" in e.value.hint and "dimamba" in e.value.hint
    with pytest.raises(AtatError, match="AR baseline keeps its causal transformer"):
        load_config("test", "ar", overrides=["model.backbone=dimamba"])
    with pytest.raises(AtatError, match="d_state"):
        load_config("test", overrides=["model.backbone=dimamba", "model.d_state=0"])
    with pytest.raises(AtatError, match="compile_scan compiles DiMamba's scan"):
        load_config("test", overrides=["model.compile_scan=true"])
    model, _ = random_dimamba()
    with pytest.raises(AtatError, match="no cached decoding"):
        model(torch.zeros(1, 8, dtype=torch.long), torch.rand(1), kv_caches=[{}, {}])
