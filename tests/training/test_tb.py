import json
import sys

import pytest
from conftest import write_corpus

from helpers import tiny_config
from lstmlm.cli.main import main
from lstmlm.training import start_run
from lstmlm.training.tb import TensorBoardSink, tee


def scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_sink_writes_trainer_events(tmp_path):
    pytest.importorskip("tensorboard")
    corpus = write_corpus(tmp_path / "corpus.txt")
    seen = []
    sink = TensorBoardSink(tmp_path / "tb")
    start_run(
        tiny_config(corpus, epochs=2),
        tmp_path / "run",
        on_event=tee(lambda k, d: seen.append(k), sink),
    )
    sink.close()
    assert "progress" in seen and "epoch" in seen  # the tee forwards to every sink
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    epochs = [r for r in records if r["event"] == "epoch"]
    s = scalars(tmp_path / "tb")
    assert [v for _, v in s["valid/ppl"]] == pytest.approx([r["valid_ppl"] for r in epochs])
    assert [st for st, _ in s["valid/ppl"]] == [r["step"] for r in epochs]
    n_progress = sum(r["event"] == "progress" for r in records)
    assert len(s["train/loss"]) == n_progress
    # bits per character of the raw text and per-word perplexity: every level, word too
    assert [v for _, v in s["valid/bpc"]] == pytest.approx([r["valid_bpc"] for r in epochs])
    assert [v for _, v in s["valid/word_ppl"]] == pytest.approx(
        [r["valid_word_ppl"] for r in epochs]
    )
    assert "final/test_ppl" in s


def test_missing_tensorboard_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match="pip install tensorboard"):
        TensorBoardSink(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_cli_train_tensorboard_flag(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=120)
    run = tmp_path / "run"
    flags = "--emb-size 8 --hidden-size 8 --num-layers 1 --batch-size 4 --bptt 8 --epochs 1"
    argv = ["train", "--train", str(corpus), "--out", str(run), "--quiet", "--tensorboard"]
    assert main(argv + flags.split()) == 0
    assert "valid/ppl" in scalars(run / "tensorboard")
    other = tmp_path / "elsewhere"
    argv = ["train", "--resume", str(run), "--epochs", "2", "--quiet", "--tensorboard", str(other)]
    assert main(argv) == 0
    assert len(scalars(other)["valid/ppl"]) == 1  # the resumed epoch, logged in the new folder
