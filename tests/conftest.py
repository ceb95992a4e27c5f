"""Shared fixtures: every test runs offline against corpora it makes itself."""

import random

import pytest
import torch

# The test models are tiny: one thread each is fastest, and with `pytest -n 2` two workers then
# share the two cores instead of four spinning OpenMP threads fighting over them.
torch.set_num_threads(1)

WORDS = ("the model masks tokens and learns to fill them back in from context while the schedule "
         "decides how many positions are hidden at each time step of the diffusion process").split()


def write_corpus(folder, n_docs=120, seed=0):
    """A small deterministic text corpus: documents of pseudo-sentences, separated by blank lines."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for _ in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                     for _ in range(rng.randint(2, 5))]
        docs.append(" ".join(sentences))
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture
def atat_home(tmp_path, monkeypatch):
    """Isolated data and runs folders, with a small byte-level corpus prepared as 'tinytext'."""
    from atat_cli.data import ensure_prepared

    monkeypatch.setenv("ATAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATAT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("ATAT_DEBUG", raising=False)
    source = write_corpus(tmp_path / "src")
    ensure_prepared("tinytext", files=[source], tokenizer="bytes", progress=False)
    return tmp_path


# Overrides that make a training run take a second or two on a CPU.
FAST = ["data.name=tinytext", "train.precision=fp32", "train.batch_size=4", "train.eval_batches=1",
        "train.log_every=1", "train.save_every=2", "optim.warmup_steps=2"]
