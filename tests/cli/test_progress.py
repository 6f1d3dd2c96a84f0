"""The training progress bar follows the run's budgets (--max-steps, --max-minutes)."""

import json
import re

from helpers import write_corpus
from lstmlm.cli.main import main
from lstmlm.cli.progress import ProgressReporter
from lstmlm.storage.curves import read_curves

TINY = "--emb-size 8 --hidden-size 8 --num-layers 1 --batch-size 2 --bptt 4 --epochs 1".split()


def test_bar_total_is_max_steps_not_the_epoch(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=300)  # ~1000 windows an epoch
    argv = ["train", "--train", str(corpus), "--out", str(tmp_path / "r"), "--max-steps", "12"]
    assert main(argv + TINY + ["--log-every", "5"]) == 0
    err = capsys.readouterr().err
    counts = set(re.findall(r"\b(\d+)/(\d+) \[", err))
    assert counts and all(total == "12" for _, total in counts), counts
    assert ("12", "12") in counts


def test_bar_ends_where_the_time_budget_does():
    r = ProgressReporter(quiet=True)
    r("epoch_start", {"epoch": 1, "steps": 1000, "done": 0, "step": 0, "max_minutes": 1.0})
    assert r.bar.total == 1000
    # 100 steps in 30 s: the other 30 s of the minute hold 100 more
    r("progress", progress(done=100, step=100, elapsed=30.0))
    assert r.bar.total == 200
    r("progress", progress(done=150, step=150, elapsed=60.0))
    assert r.bar.total == 150  # the budget is spent: the bar is full, no time left
    r.close()


def test_resumed_epoch_bar_counts_the_steps_left(tmp_path):
    r = ProgressReporter(quiet=True)
    r("epoch_start", {"epoch": 2, "steps": 50, "done": 10, "step": 60, "max_steps": 70})
    assert r.bar.total == 20 and r.bar.n == 10  # 10 more steps, from window 10
    r.close()


def progress(**kw):
    return {"train_loss": 1.0, "train_ppl": 2.7, "lr": 1.0, "tokens_per_sec": 1.0, **kw}


def test_run_shorter_than_log_every_has_a_curve(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=300)
    run = tmp_path / "r"
    argv = ["train", "--train", str(corpus), "--out", str(run), "--max-steps", "7", "--quiet"]
    assert main(argv + TINY + ["--log-every", "50"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    (last,) = [r for r in records if r["event"] == "progress"]
    assert last["step"] == 7
    assert len(read_curves(run).train) == 1
    out = tmp_path / "c.png"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert out.stat().st_size > 0


def test_a_sampled_softmax_run_says_its_train_ppl_is_the_sampled_one(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=100)
    argv = ["train", "--train", str(corpus), "--out", str(tmp_path / "r")]
    assert main(argv + TINY + ["--tie-weights", "--sampled-softmax", "8"]) == 0  # one epoch
    err = capsys.readouterr().err
    assert "--sampled-softmax 8: the train loss and ppl shown are the sampled" in err
    assert re.search(r"epoch +1 \| sampled train ppl +[\d.]+ \| valid ppl", err), err
