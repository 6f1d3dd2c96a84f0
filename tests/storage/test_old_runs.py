"""A run folder written before the package was restructured (tests/fixtures/run-0.1.0,
see its README) still evaluates to its own summary and resumes exactly."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import lstmlm
from lstmlm import storage
from lstmlm.config import RunConfig, replace
from lstmlm.evaluation import evaluate
from lstmlm.training import resume_run, start_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """The fixture run, copied, its config pointed at the copied corpus (as a user who
    moved both would edit it)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-0.1.0", run)
    corpus = shutil.copy(FIXTURES / "run-0.1.0-corpus.txt", tmp_path / "corpus.txt")
    config = json.loads((run / storage.CONFIG).read_text())
    config["run"]["data"]["train"] = str(corpus)
    (run / storage.CONFIG).write_text(json.dumps(config, indent=2))
    return run


def test_an_old_run_evaluates_to_its_own_summary(old_run):
    summary = json.loads((old_run / storage.SUMMARY).read_text())
    model, vocab, info = storage.load_run(old_run)
    from lstmlm.data.dataset import load_dataset

    data = load_dataset(info.config.data, level=info.level, vocab=vocab)
    assert data.text_sha256 == info.extra["text_sha256"]  # the same text, read the same way
    batch = info.config.train.eval_batch_size
    for split in ("valid", "test"):
        got = evaluate(model, getattr(data, split), batch, 100)
        assert got.loss == pytest.approx(summary[f"{split}_loss"], rel=1e-6), split
    assert lstmlm.load(old_run).score("the cat sees the park\n")["tokens"] == 6


def test_an_old_run_resumes_exactly(old_run, tmp_path):
    info, _ = storage.read_run_files(old_run)
    assert info.config.train.max_steps == 20  # it stopped there, mid-epoch 1
    resume_run(old_run, {"max_steps": None})  # to the end of its 2 epochs
    # The same run trained from scratch by today's code, without the stop.
    cfg = info.config
    fresh = RunConfig(cfg.data, cfg.model, replace(cfg.train, max_steps=None), cfg.preset)
    start_run(fresh, tmp_path / "fresh")
    resumed, _ = storage.load_tensors(old_run / storage.LAST)
    whole, _ = storage.load_tensors(tmp_path / "fresh" / storage.LAST)
    weights = [k for k in whole if k.startswith("model.")]
    assert weights and weights == [k for k in resumed if k.startswith("model.")]
    # The fixture's first 20 steps ran on the CPU that wrote it (an AMD EPYC), whose
    # kernels round differently from another CPU's: on an Intel Xeon with AMX the two
    # end 1e-5 apart, bit-identical on the CPU that wrote it. A resume that lost any
    # state (an optimizer buffer, the data offset, a generator) moves the weights by ~1
    # or more (another seed: 4.1), so 1e-4 tells the two apart on any CPU; exactness on
    # one CPU is tests/training/test_crash.py's.
    for k in weights:
        assert torch.allclose(resumed[k], whole[k], rtol=0, atol=1e-4), k
