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


def test_an_old_word_run_gets_todays_numbers_and_its_records_still_read(old_run, capsys):
    """Its summary.json and metrics.jsonl have no bpc, word_ppl or <unk> share: they
    read as before (perplexity curves), and evaluating it gives the new numbers."""
    from lstmlm.cli.main import main
    from lstmlm.cli.progress import format_summary
    from lstmlm.reports.plot import plot_runs
    from lstmlm.storage.curves import read_curves

    summary = json.loads((old_run / storage.SUMMARY).read_text())
    assert "valid_bpc" not in summary
    assert format_summary(summary, "valid") == f"valid ppl {summary['valid_ppl']:9.2f}"
    c = read_curves(old_run)  # stopped mid-epoch 1: progress records only
    assert c.train and c.train[0].bpc is None and not c.has_bpc
    assert plot_runs([old_run], old_run / "c.png").name == "c.png"  # auto: ppl, as before
    with pytest.raises(ValueError, match="has no bits per character in its records"):
        plot_runs([old_run], old_run / "c.png", metric="bpc")
    assert main(["evaluate", str(old_run), "--split", "valid", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["loss"] == pytest.approx(summary["valid_loss"], rel=1e-6)
    assert d["bpc"] > 0 and d["word_ppl"] > d["ppl"]  # <eos> is a token, not a word


def _as_written_before(run: Path) -> None:
    """Rewrite a char run's summary.json and metrics.jsonl as lstmlm wrote them before
    bpc was of the raw text: bpc as loss / ln 2 (bits per token) at character levels
    only, no train_bpc in epoch records, no word_ppl, <unk> share, level or text."""
    import math

    records = []
    for line in (run / storage.METRICS).read_text().splitlines():
        r = json.loads(line)
        for key in ("train_bpc", "valid_bpc", "valid_word_ppl"):
            r.pop(key, None)
        if r["event"] == "progress":
            r["train_bpc"] = r["train_loss"] / math.log(2)
        if r["event"] == "epoch":
            r["valid_bpc"] = r["valid_loss"] / math.log(2)
        records.append(json.dumps(r))
    (run / storage.METRICS).write_text("\n".join(records) + "\n")
    s = json.loads((run / storage.SUMMARY).read_text())
    for key in list(s):
        if key.endswith(("_word_ppl", "_unk_share")) or key in ("level", "text"):
            del s[key]
    s["valid_bpc"] = s["valid_loss"] / math.log(2)
    s["test_bpc"] = s["test_loss"] / math.log(2)
    (run / storage.SUMMARY).write_text(json.dumps(s, indent=2))


def test_an_old_char_runs_bits_per_token_read_as_bits_per_character(tmp_path):
    """Before, a char run recorded bits per token; there a token is a character, so the
    number is the same one today's records hold (to one <eos> when a text lacks a final
    line end), and old and new runs plot together."""
    from helpers import tiny_config, write_corpus
    from lstmlm.config import DataConfig
    from lstmlm.reports.plot import plot_runs
    from lstmlm.storage.curves import read_curves

    corpus = write_corpus(tmp_path / "c.txt", n_lines=60)
    cfg = tiny_config(corpus, epochs=2)
    run = tmp_path / "char"
    start_run(RunConfig(DataConfig(train=str(corpus), level="char"), cfg.model, cfg.train), run)
    new = read_curves(run)
    summary = json.loads((run / storage.SUMMARY).read_text())
    counts = summary["text"]["valid"]
    assert counts["tokens"] == counts["chars"]  # one token per character
    assert summary["valid_bpc"] == pytest.approx(summary["valid_loss"] / 0.6931471805599453)
    _as_written_before(run)
    old = read_curves(run)
    assert old.has_bpc and [p.loss for p in old.valid] == [p.loss for p in new.valid]
    for a, b in zip(old.train + old.valid, new.train + new.valid, strict=True):
        assert a.bpc == pytest.approx(b.bpc, rel=1e-9)
    word = tmp_path / "word"
    start_run(tiny_config(corpus, epochs=1), word)
    assert plot_runs([run, word], tmp_path / "both.png").exists()  # auto: in bpc
