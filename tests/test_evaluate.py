import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config, write_corpus
from lstmlm import checkpoint
from lstmlm.cli import main
from lstmlm.config import ModelConfig
from lstmlm.evaluate import evaluate, token_nlls
from lstmlm.model import LanguageModel
from lstmlm.train import start_run


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=2, dropout=0.3), 13)


def test_evaluation_equals_exp_of_mean_nll_by_hand(model):
    ids = torch.randint(0, 13, (41,))
    res = evaluate(model, ids, "word", batch_size=1, bptt=7)
    model.eval()
    with torch.no_grad():
        logits = model(ids[:-1].unsqueeze(1)).logits.squeeze(1)  # (N-1, V)
        nll = F.cross_entropy(logits, ids[1:], reduction="mean").item()
    assert res.tokens == 40
    assert res.loss == pytest.approx(nll, rel=1e-5)
    assert res.ppl == pytest.approx(math.exp(nll), rel=1e-5)
    assert res.bpc is None


def test_evaluation_is_deterministic_and_restores_train_mode(model):
    ids = torch.randint(0, 13, (200,))
    model.train()
    a = evaluate(model, ids, "char", batch_size=4, bptt=9)
    b = evaluate(model, ids, "char", batch_size=4, bptt=9)
    assert a == b
    assert model.training
    assert a.bpc == pytest.approx(a.loss / math.log(2))


def test_window_length_does_not_change_the_result(model):
    ids = torch.randint(0, 13, (120,))
    a = evaluate(model, ids, "word", batch_size=3, bptt=5)
    b = evaluate(model, ids, "word", batch_size=3, bptt=50)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


# --- per-token scores ---


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    start_run(tiny_config(write_corpus(d / "corpus.txt"), epochs=1, lr=10.0), d / "run")
    return d / "run"


def test_token_nlls_sum_to_batch_one_evaluation(run):
    model, vocab, info = checkpoint.load_run(run)
    ids = torch.tensor(vocab.encode("the cat sees the park <eos> she likes a book".split()))
    nll = token_nlls(model, ids, bptt=3)
    assert nll.shape == (ids.numel() - 1,)
    assert nll.mean().item() == pytest.approx(evaluate(model, ids, "word", 1, 100).loss, rel=1e-6)


def test_cli_per_token_writes_one_line_per_token_in_order(run, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sees the park\nshe likes a zebra\n")
    out = tmp_path / "tok.jsonl"
    argv = ["evaluate", str(run), "--file", str(text), "--per-token", str(out), "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tokens = ["cat", "sees", "the", "park", "<eos>", "she", "likes", "a", "<unk>", "<eos>"]
    assert [r["token"] for r in rows] == tokens
    assert d["tokens"] == len(rows)
    assert sum(r["nll"] for r in rows) / len(rows) == pytest.approx(d["loss"], rel=1e-6)


def test_per_token_is_plain_only(run, tmp_path, capsys):
    argv = ["evaluate", str(run), "--cache", "--per-token", str(tmp_path / "x.jsonl")]
    assert main(argv) == 2
    assert "plain evaluation only" in capsys.readouterr().err
