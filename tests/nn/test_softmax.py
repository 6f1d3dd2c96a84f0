"""Output heads: the adaptive softmax is an exact distribution, trained on its fast loss."""

import json
import math
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config, write_corpus
from lstmlm import storage as ckpt
from lstmlm.config import ModelConfig, RunConfig, replace
from lstmlm.data.batching import window
from lstmlm.data.dataset import load_dataset
from lstmlm.data.tokenize import tokenize
from lstmlm.data.vocab import Vocab
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.generation import SampleConfig, generate
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.precision import autocast
from lstmlm.nn.softmax import AdaptiveSoftmax, FullSoftmax
from lstmlm.training import Trainer, start_run

V = 30
CUTOFFS = (5, 12)


def adaptive(**kw) -> LanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        **{"emb_size": 12, "hidden_size": 16, "num_layers": 1, "softmax": "adaptive",
           "cutoffs": CUTOFFS, **kw}
    )  # fmt: skip
    return LanguageModel(cfg, V)


def adaptive_config(corpus, cutoffs=(4, 10), **train_kw) -> RunConfig:
    cfg = tiny_config(corpus, **train_kw)  # ~25 word types
    return replace(cfg, model=replace(cfg.model, softmax="adaptive", cutoffs=cutoffs))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("adaptive")
    result = start_run(adaptive_config(write_corpus(d / "c.txt"), epochs=6, lr=10.0), d / "run")
    return d / "run", result


def test_vocab_ids_are_frequency_ranks(corpus):
    tokens = tokenize(corpus.read_text(), "word")
    vocab = Vocab.build(tokens)
    counts = Counter(tokens)
    ranked = [counts[t] for t in vocab.itos[2:]]  # after <eos>, <unk>
    assert ranked == sorted(ranked, reverse=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_log_probs_sum_to_one(precision):
    m = adaptive(dropout=0.2).eval()
    x = torch.randint(0, V, (7, 3))
    with torch.no_grad(), autocast(precision):
        out = m(x)
        again = m.log_probs(out.features)  # features are bf16 under autocast
    assert out.logits.shape == (7, 3, V) and out.logits.dtype == torch.float32
    assert torch.allclose(out.logits.logsumexp(-1), torch.zeros(7, 3), atol=1e-5)
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(7, 3), atol=1e-5)
    # Consumers that take log_softmax / cross_entropy of `logits` stay exact.
    assert torch.allclose(F.log_softmax(out.logits, -1), out.logits, atol=1e-6)
    assert torch.equal(again, out.logits)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_loss_equals_nll_of_full_log_probs(precision):
    m = adaptive().eval()
    x = torch.randint(0, V, (9, 4))
    y = torch.tensor([0, 3, 4, 5, 11, 12, 29, 7, 20] * 4).view(9, 4)  # every cluster, edges
    with torch.no_grad(), autocast(precision):
        full = m(x)
        fast = m(x, None, y)
        each = m.loss(full.features, y, "none")
        total = m.loss(full.features, y, "sum")
    nll = F.nll_loss(full.logits.view(-1, V), y.view(-1), reduction="none")  # (36,)
    assert fast.logits is None  # the training path never builds (T, B, V)
    assert fast.loss.dtype == torch.float32
    assert torch.allclose(fast.loss, nll.mean(), atol=1e-5)
    assert torch.allclose(each, nll, atol=1e-5)
    assert torch.allclose(total, nll.sum(), atol=1e-4)


def test_fast_loss_and_full_log_probs_give_the_same_gradients():
    m = adaptive().eval()
    x = torch.randint(0, V, (6, 3))
    y = torch.tensor([1, 4, 5, 11, 12, 29] * 3).view(6, 3)
    grads = []
    for full in (True, False):
        m.zero_grad()
        if full:
            F.nll_loss(m(x).logits.view(-1, V), y.view(-1)).backward()
        else:
            m(x, None, y).loss.backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_fast_loss_with_row_selections_past_one_padding_bucket():
    # 150 rows: each tail's selection spans several ROW_BUCKETs and is padded.
    m = adaptive().eval()
    torch.manual_seed(3)
    x, y = torch.randint(0, V, (50, 3)), torch.randint(0, V, (50, 3))
    with torch.no_grad():
        full = m(x)
        each = m.loss(full.features, y, "none")
    nll = F.nll_loss(full.logits.view(-1, V), y.view(-1), reduction="none")  # (150,)
    assert torch.allclose(each, nll, atol=1e-5)


def test_every_parameter_gets_a_gradient_even_with_empty_clusters():
    m = adaptive().train()
    x = torch.randint(0, V, (5, 2))
    y = torch.randint(0, CUTOFFS[0], (5, 2))  # shortlist only: both tails see no target
    m(x, None, y).loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []  # DDP (find_unused_parameters off) needs every one


def test_full_softmax_head_is_unchanged():
    torch.manual_seed(0)
    m = LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=1, tie_weights=True), 17)
    assert type(m.decoder) is FullSoftmax and m.decoder.weight is m.embedding.weight
    assert {k for k in m.state_dict() if k.startswith("decoder.")} == {
        "decoder.weight",
        "decoder.bias",
    }
    x, y = torch.randint(0, 17, (6, 3)), torch.randint(0, 17, (6, 3))
    out = m.eval()(x)
    expected = F.cross_entropy(out.logits.view(-1, 17), y.view(-1))
    assert torch.allclose(m(x, None, y).loss, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(cutoffs=(12, 5)), "increasing"),
        (dict(cutoffs=(5, 5)), "increasing"),
        (dict(cutoffs=()), "at least one|one or more"),
        (dict(cutoffs=(0, 5)), "positive"),
        (dict(tie_weights=True, hidden_size=12), "--tie-weights"),
        (dict(div_value=0.5), "div_value"),
    ],
)
def test_bad_options_are_value_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        adaptive(**kw)


@pytest.mark.parametrize("cutoffs", [(5, 30), (5, 31), (30,)])
def test_cutoffs_at_or_past_the_vocabulary_name_its_size(cutoffs):
    with pytest.raises(ValueError, match=f"vocabulary size {V}"):
        adaptive(cutoffs=cutoffs)
    with pytest.raises(ValueError, match=f"vocabulary size {V}"):
        AdaptiveSoftmax(16, V, cutoffs)


def test_tiny_adaptive_model_trains(run):
    run_dir, result = run
    # ~25 word types with a fixed grammar: uniform is ppl ~27, the grammar allows far less.
    assert result.valid.ppl < 9.0
    records = [json.loads(line) for line in (run_dir / ckpt.METRICS).open()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.5


@pytest.mark.parametrize(
    "kw", [dict(loss_reduction="sum", lr=0.5, clip=5.0), dict(precision="bf16", lr=5.0)]
)
def test_train_steps_lower_the_loss(corpus, tmp_path, kw):
    cfg = adaptive_config(corpus, **kw)
    (tmp_path / "r").mkdir()
    t = Trainer(tmp_path / "r", cfg, load_dataset(cfg.data))
    x, y = window(t.train_data, 0, 8)
    first = t.train_step(x, y).item()
    for _ in range(20):
        t.train_step(x, y)
    assert t.step_ok and t.train_step(x, y).item() < first


def test_save_load_gives_same_log_probs(run):
    run_dir, _ = run
    model, vocab, info = ckpt.load_run(run_dir)
    assert isinstance(model.decoder, AdaptiveSoftmax)
    assert info.config.model.softmax == "adaptive" and info.config.model.cutoffs == (4, 10)
    tensors, _ = ckpt.load_tensors(run_dir / ckpt.BEST)
    assert "model.decoder.tails.1.1.weight" in tensors
    again = LanguageModel(info.config.model, len(vocab)).eval()
    ckpt.load_model_tensors(again, tensors, "model.")
    x = torch.randint(0, len(vocab), (6, 2))
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)


def test_run_folder_from_before_the_softmax_option_loads(corpus, tmp_path):
    run = tmp_path / "old"
    start_run(tiny_config(corpus, max_steps=2), run)
    info = json.loads((run / ckpt.CONFIG).read_text())
    for key in ("softmax", "cutoffs", "div_value"):
        del info["run"]["model"][key]  # as written before these options existed
    (run / ckpt.CONFIG).write_text(json.dumps(info))
    model, _, loaded = ckpt.load_run(run)
    assert loaded.config.model.softmax == "full" and type(model.decoder) is FullSoftmax


def test_evaluate_is_exp_of_mean_nll(run):
    model, vocab, _ = ckpt.load_run(run[0])
    ids = torch.tensor(vocab.encode(tokenize("the cat sees a ball\nshe keeps the book\n", "word")))
    with torch.no_grad():
        logp = model(ids[:-1].unsqueeze(1)).logits.squeeze(1)  # (N-1, V)
    nll = -logp.gather(1, ids[1:].unsqueeze(1)).mean().item()
    r = evaluate(model, ids, batch_size=1, bptt=4)
    assert r.tokens == ids.numel() - 1
    assert r.loss == pytest.approx(nll, abs=1e-5)
    assert r.ppl == pytest.approx(math.exp(nll), rel=1e-5)


def test_generation_with_an_adaptive_model(run):
    model, vocab, info = ckpt.load_run(run[0])
    cfg = SampleConfig(max_new_tokens=12, seed=1, num_return_sequences=2, top_k=5)
    texts = generate(model, vocab, info.level, "the cat", cfg)  # one text per sample
    assert len(texts) == 2 and all(t.split() for t in texts)
    assert generate(model, vocab, info.level, "the cat", cfg) == texts  # seeded
    # The one-step fast path gives the same log-probs as the model's forward.
    step = model.stepper()
    state = model(torch.randint(0, len(vocab), (4, 2))).state
    tok = torch.tensor([3, 7])
    with torch.no_grad():
        logp, _ = step(tok, state)
        out = model(tok.unsqueeze(0), state)
    assert torch.allclose(logp, out.logits[0], atol=1e-6)


def _lstmlm(*args):
    return subprocess.run(
        [sys.executable, "-m", "lstmlm", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


TINY = ["--emb-size", "16", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4"]
TINY += ["--bptt", "8", "--epochs", "1", "--quiet"]


def test_cli_trains_and_evaluates_adaptive(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    run = tmp_path / "run"
    flags = ["--softmax", "adaptive", "--cutoffs", "4", "10", "--max-steps", "10"]
    r = _lstmlm("train", "--train", corpus, "--out", run, "--json", *TINY, *flags)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert math.isfinite(summary["valid_ppl"])
    assert json.loads((run / ckpt.CONFIG).read_text())["run"]["model"]["cutoffs"] == [4, 10]
    r = _lstmlm("evaluate", run, "--split", "test", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["ppl"] > 1


def test_cli_cutoffs_past_the_vocabulary_is_one_line(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    # The default cutoffs (2000 10000) do not fit a ~25-word vocabulary.
    r = _lstmlm("train", "--train", corpus, "--out", tmp_path / "run", *TINY, "--softmax=adaptive")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "vocabulary size" in lines[0] and "Traceback" not in r.stderr
