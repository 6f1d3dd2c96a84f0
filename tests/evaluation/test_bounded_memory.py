"""Evaluation scores a large vocabulary's full softmax in chunks of rows with a bounded
number of logits, equal to the unchunked result; an evaluation that fails after training
never loses the trained weights."""

import pytest
import torch
import torch.nn.functional as F

from helpers import write_corpus
from lstmlm import storage
from lstmlm.cli.main import main
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.nn import linear_ce
from lstmlm.training.trainer import Trainer

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()


def test_inference_scores_at_most_a_bounded_number_of_logits(monkeypatch):
    torch.manual_seed(0)
    n, d, v = 150, 8, 97
    x, w, b = torch.randn(n, d), torch.randn(v, d), torch.randn(v)
    y = torch.randint(v, (n,))
    with torch.inference_mode():
        whole = F.cross_entropy(F.linear(x, w, b), y, reduction="none")
        monkeypatch.setattr(linear_ce, "MAX_LOGITS", 3 * v)  # chunks of 3 rows
        seen = []
        real = linear_ce._scores
        monkeypatch.setattr(linear_ce, "_scores", lambda *a: seen.append(a[0].size(0)) or real(*a))
        chunked = linear_ce.linear_cross_entropy(x, w, b, y, reduction="none")
    assert max(seen) == 3 and sum(seen) == n  # never more than 3 rows of V logits at once
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_evaluate_with_small_chunks_equals_unchunked(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    assert (
        main(["train", "--train", str(corpus), "--out", str(run), *TINY, "--max-steps", "3"]) == 0
    )
    model, vocab, info = storage.load_run(run)
    ids = torch.randint(len(vocab), (500,))
    whole = evaluate(model, ids, batch_size=4, bptt=20)
    monkeypatch.setattr(linear_ce, "MAX_LOGITS", len(vocab) * 5)
    chunked = evaluate(model, ids, batch_size=4, bptt=20)
    assert chunked.tokens == whole.tokens
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-6)


def test_a_failed_final_evaluation_keeps_the_trained_weights(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=200)
    run = tmp_path / "run"

    def out_of_memory(self):
        raise MemoryError("cannot allocate 6.9 GB")

    monkeypatch.setattr(Trainer, "validate", out_of_memory)
    with pytest.raises(MemoryError):
        main(["train", "--train", str(corpus), "--out", str(run), *TINY, "--max-steps", "6"])
    monkeypatch.undo()
    _, meta = storage.load_tensors(run / storage.LAST)  # saved before the evaluation
    assert meta["trainer"]["step"] == 6
    assert not (run / storage.SUMMARY).exists()
    # the run is finished but not evaluated: --resume evaluates it and writes the summary
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (run / storage.SUMMARY).exists()
    _, meta = storage.load_tensors(run / storage.LAST)
    assert meta["trainer"]["step"] == 6  # nothing trained twice
