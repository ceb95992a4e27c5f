"""`atat import mdlm`: a checkpoint in the format of MDLM's release (kuleshov-group/mdlm-owt: the
same key names and config.json, at a small width, random weights) gives, once imported, the
logits of MDLM's own forward pass, written here from MDLM's models/dit.py without atat's modules;
the folder evaluates and samples through the CLI; bad input is refused with one line and leaves
nothing behind. The hub itself is not reached: a hub id is tested through a local cache."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from atat_cli.cli.app import main
from atat_cli.diffusion.subs import subs_log_probs
from atat_cli.errors import AtatError
from atat_cli.runs import load_run
from atat_cli.runs.hf_folder import CONFIG_FILE, WEIGHTS_FILE
from atat_cli.runs.import_mdlm import import_mdlm

from conftest import WORDS, write_corpus

CPU = torch.device("cpu")
WIDTH, BLOCKS, HEADS, COND, LENGTH = 64, 2, 2, 32, 32
EOS = "<|endoftext|>"


# ---- a checkpoint in MDLM's format -------------------------------------------------------------


def gpt2_style_backend(n_merged=300):
    """A byte-level BPE as GPT-2's: the byte alphabet and merges, then <|endoftext|> as the last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_merged, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    tok.add_special_tokens([EOS])
    return tok


def mdlm_weights(rows, time_conditioning, seed=0):
    """MDLM's state dict (`backbone.` keys as its HF MDLM class saves them), random and non-zero
    everywhere: adaLN modulates, gates are open, norms are not ones."""
    g = torch.Generator().manual_seed(seed)

    def lin(out, fan_in, scale=1.0):
        return torch.randn(out, fan_in, generator=g) * scale / math.sqrt(fan_in)

    def vec(n, scale=0.1, base=0.0):
        return base + scale * torch.randn(n, generator=g)

    D, Dh = WIDTH, WIDTH // HEADS
    w = {"backbone.vocab_embed.embedding": torch.randn(rows, D, generator=g),
         "backbone.sigma_map.mlp.0.weight": lin(COND, 256), "backbone.sigma_map.mlp.0.bias": vec(COND),
         "backbone.sigma_map.mlp.2.weight": lin(COND, COND), "backbone.sigma_map.mlp.2.bias": vec(COND),
         "backbone.rotary_emb.inv_freq": 1.0 / (10000 ** (torch.arange(0, Dh, 2).float() / Dh))}
    for i in range(BLOCKS):
        p = f"backbone.blocks.{i}."
        w.update({p + "norm1.weight": vec(D, base=1.0), p + "attn_qkv.weight": lin(3 * D, D),
                  p + "attn_out.weight": lin(D, D), p + "norm2.weight": vec(D, base=1.0),
                  p + "mlp.0.weight": lin(4 * D, D), p + "mlp.0.bias": vec(4 * D),
                  p + "mlp.2.weight": lin(D, 4 * D), p + "mlp.2.bias": vec(D),
                  p + "adaLN_modulation.weight": lin(6 * D, COND, 0.5), p + "adaLN_modulation.bias": vec(6 * D, 0.3)})
    w.update({"backbone.output_layer.norm_final.weight": vec(D, base=1.0),
              "backbone.output_layer.linear.weight": lin(rows, D, 2.0), "backbone.output_layer.linear.bias": vec(rows),
              "backbone.output_layer.adaLN_modulation.weight": lin(2 * D, COND, 0.5),
              "backbone.output_layer.adaLN_modulation.bias": vec(2 * D, 0.3)})
    return w


def write_mdlm(folder, time_conditioning=False, tokenizer="json", seed=0):
    """A folder as the hub repository holds it (config.json, model.safetensors), with a tokenizer:
    "json" (tokenizer.json), "pair" (GPT-2's vocab.json + merges.txt), "json+mask" (an added
    [MASK] at the mask id) or None."""
    folder.mkdir(parents=True, exist_ok=True)
    backend = gpt2_style_backend()
    rows = backend.get_vocab_size() + 1  # the mask id is appended, as MDLM does
    config = {"architectures": ["MDLM"], "model_type": "mdlm", "vocab_size": rows, "model_length": LENGTH,
              "hidden_dim": WIDTH, "cond_dim": COND, "n_blocks": BLOCKS, "n_heads": HEADS, "dropout": 0.1,
              "time_conditioning": time_conditioning, "return_dict": False, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(mdlm_weights(rows, time_conditioning, seed), str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer == "json":
        backend.save(str(folder / "tokenizer.json"))
    elif tokenizer == "json+mask":
        backend.add_special_tokens(["[MASK]"])
        backend.save(str(folder / "tokenizer.json"))
    elif tokenizer == "pair":
        backend.model.save(str(folder))  # vocab.json + merges.txt, without the added EOS
        vocab = json.loads((folder / "vocab.json").read_text())
        vocab[EOS] = len(vocab)  # GPT-2's vocab.json has it, as its last id
        (folder / "vocab.json").write_text(json.dumps(vocab))
    return folder


# ---- MDLM's forward pass, from its models/dit.py and diffusion.py --------------------------------


def _layer_norm(x, weight):  # MDLM's LayerNorm: no bias, the weight after F.layer_norm
    return F.layer_norm(x.float(), [x.shape[-1]]) * weight[None, None, :]


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def mdlm_forward(w, config, indices, sigma):
    """DIT.forward of MDLM (eval mode: dropout off) on its own state dict; flash-attn's
    non-interleaved rotary and its attention written out."""
    b = lambda key: w["backbone." + key]  # noqa: E731
    if not config["time_conditioning"]:  # diffusion.py's _process_sigma
        sigma = torch.zeros_like(sigma)
    B, T = indices.shape
    D, H = config["hidden_dim"], config["n_heads"]
    Dh = D // H
    x = b("vocab_embed.embedding")[indices]
    # TimestepEmbedder: 256 frequencies, cos then sin, max_period 10000, of sigma itself
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = sigma[:, None].float() * freqs[None]
    t_freq = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    t_emb = F.linear(F.silu(F.linear(t_freq, b("sigma_map.mlp.0.weight"), b("sigma_map.mlp.0.bias"))),
                     b("sigma_map.mlp.2.weight"), b("sigma_map.mlp.2.bias"))
    c = F.silu(t_emb)
    # Rotary: cos/sin of cat(freqs, freqs) over the sequence
    pos = torch.arange(T).type_as(b("rotary_emb.inv_freq"))
    angles = torch.einsum("i,j->ij", pos, b("rotary_emb.inv_freq"))
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1, T, 1, Dh)
    for i in range(config["n_blocks"]):
        p = f"blocks.{i}."
        mods = F.linear(c, b(p + "adaLN_modulation.weight"), b(p + "adaLN_modulation.bias"))[:, None]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=2)
        x_skip = x
        h = _modulate(_layer_norm(x, b(p + "norm1.weight")), shift_msa, scale_msa)
        qkv = F.linear(h, b(p + "attn_qkv.weight")).view(B, T, 3, H, Dh)  # 'b s (three h d) -> b s three h d'
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin  # v is left alone
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(Dh)
        att = torch.einsum("bhts,bshd->bthd", scores.softmax(dim=-1), v).reshape(B, T, D)
        x = x_skip + gate_msa * F.linear(att, b(p + "attn_out.weight"))
        h = _modulate(_layer_norm(x, b(p + "norm2.weight")), shift_mlp, scale_mlp)
        h = F.linear(F.gelu(F.linear(h, b(p + "mlp.0.weight"), b(p + "mlp.0.bias")), approximate="tanh"),
                     b(p + "mlp.2.weight"), b(p + "mlp.2.bias"))
        x = x + gate_mlp * h
    shift, scale = F.linear(c, b("output_layer.adaLN_modulation.weight"),
                            b("output_layer.adaLN_modulation.bias"))[:, None].chunk(2, dim=2)
    h = _modulate(_layer_norm(x, b("output_layer.norm_final.weight")), shift, scale)
    return F.linear(h, b("output_layer.linear.weight"), b("output_layer.linear.bias"))


def mdlm_subs(logits, xt, mask_index, neg_infinity=-1000000.0):
    """diffusion.py's _subs_parameterization."""
    logits = logits.clone()
    logits[:, :, mask_index] += neg_infinity
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    logits[unmasked] = neg_infinity
    logits[unmasked, xt[unmasked]] = 0
    return logits


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No hub: offline, with an empty cache (a GPT-2 tokenizer cached on this machine is not used)."""
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("ATAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATAT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("ATAT_DEBUG", raising=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_mdlm(tmp_path_factory.mktemp("mdlm") / "mdlm-small")


def _inputs(config, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = config["vocab_size"] - 1
    x = torch.randint(0, mask, (3, LENGTH), generator=g)
    x = torch.where(torch.rand(3, LENGTH, generator=g) < 0.5, mask, x)
    level = torch.tensor([0.07, 0.5, 0.93])
    return x, level


# ---- the numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_imported_logits_equal_mdlms_forward(tmp_path, time_conditioning):
    src = write_mdlm(tmp_path / "src", time_conditioning=time_conditioning)
    summary = import_mdlm(str(src), tmp_path / "out")
    config, weights = json.loads((src / CONFIG_FILE).read_text()), load_file(src / WEIGHTS_FILE)
    trained = load_run(tmp_path / "out", CPU)
    model, mask = trained.model, config["vocab_size"] - 1
    assert trained.data.vocab_size == mask and model.mask_id == mask == summary["mask_id"]
    assert trained.cfg.model.time_input == ("sigma" if time_conditioning else "none")
    x, level = _inputs(config)
    sigma = -torch.log1p(-level)  # MDLM's total noise at the masking rate atat feeds
    with torch.no_grad():
        ours = model(x, level)
        ref = mdlm_forward(weights, config, x, sigma)
        assert ours.shape == ref.shape == (3, LENGTH, config["vocab_size"])
        assert ref.abs().max() > 1.0 and ref.std() > 0.5  # not a trivial model
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        # the rows the NELBO asks for: masked positions, real vocabulary only
        at = x == mask
        torch.testing.assert_close(model(x, level, at=at), ref[at][:, :mask], atol=1e-5, rtol=1e-5)
        # SUBS: the same distribution at masked positions, the token carried over elsewhere
        ours_lp, ref_lp = subs_log_probs(ours, x, mask), mdlm_subs(ref, x, mask)
        torch.testing.assert_close(ours_lp[at][:, :mask], ref_lp[at][:, :mask], atol=1e-5, rtol=1e-5)
        assert torch.equal(ours_lp[~at].argmax(-1), x[~at]) and torch.equal(ref_lp[~at].argmax(-1), x[~at])
        assert torch.all(ours_lp[~at].max(-1).values == 0)
        # the noise level matters exactly when MDLM was time-conditioned
        other = model(x, level.flip(0))
        assert torch.equal(other, ours) != time_conditioning
        if time_conditioning:
            torch.testing.assert_close(other, mdlm_forward(weights, config, x, sigma.flip(0)), atol=1e-5, rtol=1e-5)
            # a sampler may pass rate 1 (all masked): capped at MDLM's largest sigma, -log(1e-3)
            torch.testing.assert_close(model(x, torch.ones(3)),
                                       mdlm_forward(weights, config, x, torch.full((3,), -math.log(1e-3))),
                                       atol=1e-5, rtol=1e-5)


def test_weights_are_renamed_not_changed(tmp_path, source):
    import_mdlm(str(source), tmp_path / "out")
    theirs, ours = load_file(source / WEIGHTS_FILE), load_file(tmp_path / "out" / WEIGHTS_FILE)
    assert len(ours) == len(theirs) - 1  # all but the rotary buffer, which atat computes
    assert torch.equal(ours["embed.weight"], theirs["backbone.vocab_embed.embedding"])
    assert torch.equal(ours["blocks.1.attn.proj.weight"], theirs["backbone.blocks.1.attn_out.weight"])
    assert torch.equal(ours["final.norm.weight"], theirs["backbone.output_layer.norm_final.weight"])
    assert sorted(v.numel() for v in ours.values()) == sorted(
        v.numel() for k, v in theirs.items() if not k.endswith("inv_freq"))
    config = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())
    assert config["atat_imported_from"]["format"] == "mdlm" and config["mask_token_id"] == 301
    assert config["atat_run_config"]["model"]["norm_weight"] is True


@pytest.mark.parametrize("form", ["pair", "json+mask"])
def test_tokenizer_forms_give_the_same_tokenizer(tmp_path, source, form):
    # GPT-2's vocab.json + merges.txt; a tokenizer.json with a [MASK] (or MDLM's [PAD]) at the mask id
    import_mdlm(str(source), tmp_path / "a")
    import_mdlm(str(write_mdlm(tmp_path / "src", tokenizer=form)), tmp_path / "b")
    a, b = (load_run(tmp_path / n, CPU).data.tokenizer() for n in "ab")
    text = "the model masks tokens <|endoftext|> and learns Ünïcode 123"
    assert a.encode(text) == b.encode(text) and a.vocab_size == b.vocab_size == 301
    assert a.eos_id == b.eos_id == 300 and b.decode(b.encode(text)) == text


def test_default_setting_of_atats_dit_is_unchanged():
    # The switches are off unless an import sets them: no norm weights, the time embedding of 1000 r.
    from atat_cli.config import load_config
    from atat_cli.models import build_model

    model = build_model(load_config("test", "mdlm"), 50)
    assert not any("norm" in k for k in model.state_dict())
    assert model.time.input == "rate"


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path, source, capsys):
    out = tmp_path / "mdlm-owt"
    assert main(["import", "mdlm", str(source), str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vocab_size"] == 301 and summary["time_input"] == "none" and (out / "tokenizer").is_dir()
    # evaluation needs a corpus prepared with the imported tokenizer
    assert main(["eval", str(out), "--json"]) == 1
    assert "imported from mdlm" in capsys.readouterr().err
    corpus = write_corpus(tmp_path / "text")
    assert main(["data", "fetch", str(corpus), "--name", "owtlike", "--tokenizer", str(out / "tokenizer"), "--json"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "owtlike", "--json", "--max-blocks", "2", "--mc", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "mdlm" and math.isfinite(result["nelbo"]) and result["data"] == "owtlike"
    assert main(["sample", str(out), "--json", "--length", "8", "--steps", "2", "--seed", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)["samples"]) >= 1
    assert main(["gif", str(out), "--json", "--steps", "2", "--length", "6", "--out", str(tmp_path / "d.gif")]) == 0
    assert (tmp_path / "d.gif").is_file()
    capsys.readouterr()
    # --force replaces the earlier import, and the text form prints one line
    assert main(["import", "mdlm", str(source), str(out)]) == 1
    assert "already holds an export" in capsys.readouterr().err
    assert main(["import", "mdlm", str(source), str(out), "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {out}: MDLM's DiT from ")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folders


def test_hub_id_from_the_local_cache(tmp_path, source):
    # What snapshot_download leaves behind: models--owner--name/refs/main and snapshots/<commit>/
    import huggingface_hub.constants as hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "models--kuleshov-group--mdlm-owt"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert hub.HF_HUB_CACHE == str(tmp_path / "hub-cache")
    summary = import_mdlm("kuleshov-group/mdlm-owt", tmp_path / "out")
    assert summary["hub_id"] == "kuleshov-group/mdlm-owt" and summary["revision"] == commit
    assert load_run(tmp_path / "out", CPU).cfg.model.n_layers == BLOCKS
    with pytest.raises(AtatError, match="HF_HUB_OFFLINE is set, and it is not in the local cache"):
        import_mdlm("kuleshov-group/mdlm-lm1b", tmp_path / "other")


# ---- bad input: one line, non-zero, nothing written ---------------------------------------------


def _damage(src, what):
    """Damage the copy `src` of a good source; returns SOURCE as the command is given it."""
    cfg_path, w_path = src / "config.json", src / "model.safetensors"
    config = json.loads(cfg_path.read_text())
    weights = load_file(w_path)

    def set_config(**kw):
        cfg_path.write_text(json.dumps({**config, **kw}))

    def set_weights(w):
        save_file(w, str(w_path))

    if what == "missing folder":
        return str(src / "nowhere")
    if what == "bin file":
        (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
        return str(src / "pytorch_model.bin")
    if what == "only a bin":
        w_path.unlink()
        (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    elif what == "no config":
        cfg_path.unlink()
    elif what == "corrupt config":
        cfg_path.write_text("{not json")
    elif what == "wrong model_type":
        set_config(model_type="bert")
    elif what == "bad field":
        set_config(n_heads="two")
    elif what == "heads do not divide":
        set_config(n_heads=3)
    elif what == "no weights":
        w_path.unlink()
    elif what == "corrupt weights":
        w_path.write_bytes(w_path.read_bytes()[:200])
    elif what == "missing key":
        del weights["backbone.blocks.1.attn_out.weight"]
        set_weights(weights)
    elif what == "wrong shape":
        weights["backbone.blocks.0.mlp.0.weight"] = torch.zeros(100, WIDTH)
        set_weights(weights)
    elif what == "config disagrees":
        set_config(hidden_dim=128)
    elif what == "unknown key":
        weights["backbone.extra.weight"] = torch.zeros(3)
        set_weights(weights)
    elif what == "other rotary":
        weights["backbone.rotary_emb.inv_freq"] = weights["backbone.rotary_emb.inv_freq"] * 0.5
        set_weights(weights)
    elif what == "nan":
        weights["backbone.blocks.0.norm1.weight"][3] = float("nan")
        set_weights(weights)
    elif what == "no tokenizer":
        (src / "tokenizer.json").unlink()
    elif what == "half a pair":
        (src / "tokenizer.json").unlink()
        (src / "vocab.json").write_text("{}")
    elif what == "corrupt tokenizer":
        (src / "tokenizer.json").write_text('{"model": 3}')
    elif what == "vocab mismatch":
        set_config(vocab_size=config["vocab_size"] + 5)
        weights["backbone.vocab_embed.embedding"] = torch.zeros(config["vocab_size"] + 5, WIDTH)
        weights["backbone.output_layer.linear.weight"] = torch.zeros(config["vocab_size"] + 5, WIDTH)
        weights["backbone.output_layer.linear.bias"] = torch.zeros(config["vocab_size"] + 5)
        set_weights(weights)
    elif what == "no eos":
        tok = json.loads((src / "tokenizer.json").read_text())
        for token in tok["added_tokens"]:
            token["content"] = token["content"].replace(EOS, "<|eos|>")
        (src / "tokenizer.json").write_text(json.dumps(tok))
    return str(src)


BAD = [
    ("missing folder", "not found: no such folder, and it is not a hub id"),
    ("bin file", "is a file, not a folder"),
    ("only a bin", "holds pytorch_model.bin, a pickle, and no model.safetensors"),
    ("no config", "holds no config.json"),
    ("corrupt config", "corrupt "),
    ("wrong model_type", "has model_type 'bert', not 'mdlm'"),
    ("bad field", "n_heads must be a positive integer, got 'two'"),
    ("heads do not divide", "describes a model atat cannot build: model.d_model (64) must be divisible"),
    ("no weights", "holds no model.safetensors"),
    ("corrupt weights", "corrupt or unreadable"),
    ("missing key", "lacks backbone.blocks.1.attn_out.weight"),
    ("wrong shape", "backbone.blocks.0.mlp.0.weight has shape (100, 64)"),
    ("config disagrees", "backbone.vocab_embed.embedding has shape (302, 64)"),
    ("unknown key", "holds backbone.extra.weight, which is not a weight of MDLM's DiT"),
    ("other rotary", "rotary_emb.inv_freq is not the rotary embedding of base 10000"),
    ("nan", "backbone.blocks.0.norm1.weight holds NaN"),
    ("no tokenizer", "holds no tokenizer (tokenizer.json, or vocab.json + merges.txt), and MDLM's, gpt2, is not available"),
    ("half a pair", "merges.txt of a vocab.json + merges.txt pair is missing"),
    ("corrupt tokenizer", "cannot read the tokenizer"),
    ("vocab mismatch", "has 301 tokens, but the checkpoint's embedding has 307 rows: it needs 306"),
    ("no eos", "has no <|endoftext|> token"),
]


@pytest.mark.parametrize("what,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused(tmp_path, source, capsys, what, message):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    given = _damage(src, what)
    out = tmp_path / "out"
    assert main(["import", "mdlm", given, str(out)]) == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split()), err
    assert [line.startswith("Error:") for line in err.splitlines()].count(True) == 1 and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_that_is_not_an_export_is_never_replaced(tmp_path, source, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        assert main(["import", "mdlm", str(source), str(out), *extra]) == 1
        assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert main(["import", "mdlm", str(source), str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
