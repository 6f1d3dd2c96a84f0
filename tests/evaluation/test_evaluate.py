import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config, write_corpus
from lstmlm import storage as checkpoint
from lstmlm.cli.main import main
from lstmlm.config import ModelConfig
from lstmlm.data.dataset import encode_ids
from lstmlm.evaluation.perplexity import evaluate, token_nlls
from lstmlm.nn import precision as evaluate_module
from lstmlm.nn.model import LanguageModel
from lstmlm.training import start_run


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=2, dropout=0.3), 13)


def test_evaluation_equals_exp_of_mean_nll_by_hand(model):
    ids = torch.randint(0, 13, (41,))
    res = evaluate(model, ids, batch_size=1, bptt=7)
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
    a = evaluate(model, ids, batch_size=4, bptt=9)
    b = evaluate(model, ids, batch_size=4, bptt=9)
    assert a == b
    assert model.training
    assert a.bpc is None and a.word_ppl is None  # ids alone: no text to count characters of


def test_window_length_does_not_change_the_result(model):
    ids = torch.randint(0, 13, (120,))
    a = evaluate(model, ids, batch_size=3, bptt=5)
    b = evaluate(model, ids, batch_size=3, bptt=50)
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
    assert nll.mean().item() == pytest.approx(evaluate(model, ids, 1, 100).loss, rel=1e-6)


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


# --- fast evaluation: bf16, the other cell, the run's defaults, flag checks ---


def _sentences(vocab, repeat=8):
    return torch.tensor(
        vocab.encode(("the cat sees the park <eos> she likes a book " * repeat).split())
    )


def test_bf16_evaluation_is_close_to_fp32_and_deterministic(run):
    model, vocab, _ = checkpoint.load_run(run)
    ids = _sentences(vocab)
    fp32 = evaluate(model, ids, batch_size=4, bptt=9)
    bf16 = evaluate(model, ids, batch_size=4, bptt=9, precision="bf16")
    assert bf16.tokens == fp32.tokens
    assert bf16.loss == pytest.approx(fp32.loss, rel=1e-2)  # bf16 matmuls, fp32 softmax
    assert bf16 == evaluate(model, ids, batch_size=4, bptt=9, precision="bf16")


def test_fused_run_evaluates_with_the_manual_layer(run):
    fused, vocab, _ = checkpoint.load_run(run)
    manual, _, info = checkpoint.load_run(run, cell="manual")
    assert info.config.model.cell == "manual"
    assert type(manual.rnn.layers[0]).__name__ == "ManualLSTM"
    ids = _sentences(vocab)
    a = evaluate(fused, ids, batch_size=4, bptt=9)
    b = evaluate(manual, ids, batch_size=4, bptt=9)
    assert b.loss == pytest.approx(a.loss, rel=1e-5)  # same weights, same math in fp32
    c = evaluate(manual, ids, batch_size=4, bptt=9, precision="bf16")
    assert c.loss == pytest.approx(a.loss, rel=1e-2)  # bf16 matmuls, fp32 state and softmax
    assert c == evaluate(manual, ids, batch_size=4, bptt=9, precision="bf16")


# --- how many targets get scored ---


def _text_ids(vocab, path):
    return encode_ids(vocab, write_corpus(path, n_lines=250, seed=7).read_text(), "word")


def test_a_huge_batch_scores_nearly_every_token_as_batch_one_does(run, tmp_path):
    model, vocab, _ = checkpoint.load_run(run)
    ids = _text_ids(vocab, tmp_path / "t.txt")  # ~1100 tokens
    one = evaluate(model, ids, batch_size=1, bptt=50)
    huge = evaluate(model, ids, batch_size=100_000, bptt=50)
    assert one.tokens == ids.numel() - 1
    assert huge.tokens >= 0.97 * one.tokens  # columns of >= 64 tokens: under 1/32 left out
    assert huge.ppl == pytest.approx(one.ppl, rel=0.02)


def test_a_seven_token_text_scores_all_six_targets(run):
    model, vocab, _ = checkpoint.load_run(run)
    ids = torch.tensor(vocab.encode("the cat sees the park <eos> she".split()))
    res = evaluate(model, ids)  # the default 32 columns asked for
    assert res.tokens == 6
    assert res == evaluate(model, ids, batch_size=1)


def test_cli_huge_batch_size_scores_nearly_every_token(run, tmp_path, capsys):
    ids = _text_ids(checkpoint.load_run(run)[1], tmp_path / "t.txt")
    argv = ["evaluate", str(run), "--file", str(tmp_path / "t.txt"), "--json"]
    assert main([*argv, "--batch-size", "100000"]) == 0
    huge = json.loads(capsys.readouterr().out)
    assert main([*argv, "--batch-size", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["tokens"] == ids.numel() - 1 and huge["tokens"] >= 0.97 * one["tokens"]
    assert huge["ppl"] == pytest.approx(one["ppl"], rel=0.02)


def test_load_run_rejects_an_unknown_cell(run):
    with pytest.raises(ValueError, match="cell must be one of"):
        checkpoint.load_run(run, cell="cudnn")


def test_evaluate_batch_size_defaults_to_the_config_default():
    import inspect

    from lstmlm.config import TrainConfig

    default = inspect.signature(evaluate).parameters["batch_size"].default
    assert default == TrainConfig().eval_batch_size > 10


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval-bf16")
    cfg = tiny_config(write_corpus(d / "corpus.txt"), epochs=1, lr=10.0, precision="bf16")
    start_run(cfg, d / "run")
    return d / "run"


def test_cli_defaults_to_the_runs_batch_and_precision_and_reproduces_its_summary(bf16_run, capsys):
    summary = json.loads((bf16_run / checkpoint.SUMMARY).read_text())
    assert main(["evaluate", str(bf16_run), "--split", "valid", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ppl"] == pytest.approx(summary["valid_ppl"], rel=1e-6)
    assert (
        main(["evaluate", str(bf16_run), "--split", "valid", "--precision", "fp32", "--json"]) == 0
    )
    fp32 = json.loads(capsys.readouterr().out)
    assert fp32["ppl"] != d["ppl"]
    assert fp32["ppl"] == pytest.approx(d["ppl"], rel=1e-2)


def test_cli_manual_bf16_is_close_to_fp32(run, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--json", "--cell", "manual", "--precision", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert bf16["tokens"] == fp32["tokens"]
    assert bf16["ppl"] == pytest.approx(fp32["ppl"], rel=1e-2)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--bptt", "-3"], "--bptt must be a positive integer"),
    ],
)
def test_cli_rejects_bad_batch_and_window(run, capsys, flags, message):
    assert main(["evaluate", str(run), *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_on_a_cpu_without_fast_bf16_warns_once(monkeypatch, caplog, fast):
    monkeypatch.setattr(evaluate_module, "cpu_has_fast_bf16", lambda: fast)
    evaluate_module._warn_if_bf16_is_slow.cache_clear()
    with caplog.at_level("WARNING", logger="lstmlm"):
        for _ in range(2):
            with evaluate_module.autocast("bf16", "cpu"):
                pass
        with evaluate_module.autocast("fp32", "cpu"):
            pass
    evaluate_module._warn_if_bf16_is_slow.cache_clear()
    slow = [r for r in caplog.records if "no fast bf16" in r.getMessage()]
    assert len(slow) == (0 if fast else 1)
