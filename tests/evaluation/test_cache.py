import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config, write_corpus
from lstmlm import storage as checkpoint
from lstmlm.cli.main import main
from lstmlm.evaluation.cache import CacheConfig, cache_evaluate, cache_search
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.training import start_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    start_run(tiny_config(write_corpus(d / "corpus.txt"), epochs=2, lr=10.0), d / "run")
    return d / "run"


@pytest.fixture(scope="module")
def lm(run):
    model, vocab, info = checkpoint.load_run(run)
    return model, vocab, info.level


def _repetitive(vocab, n_repeats=12):
    # an ungrammatical sequence of the corpus' words, repeated: only a cache can learn it
    phrase = [vocab.stoi[w] for w in "apple the she ball friend river keeps old a".split()]
    return torch.tensor(phrase * n_repeats)


def _reference(model, ids, window, lam, theta):
    """Per-token loop over the formula, batch size 1, no vectorization."""
    with torch.no_grad():
        out = model(ids[:-1].unsqueeze(1))
    logp = F.log_softmax(out.logits[:, 0], -1)  # (T, V)
    h = out.hiddens[-1][:, 0]  # (T, H)
    y = ids[1:]
    total = 0.0
    for t in range(len(y)):
        pv = logp[t, y[t]].exp().item()
        lo = max(0, t - window)
        if t == 0:
            total -= math.log(pv)
            continue
        w = torch.softmax(theta * (h[lo:t] @ h[t]), 0)
        pc = w[y[lo:t] == y[t]].sum().item()
        total -= math.log((1 - lam) * pv + lam * pc)
    return total / len(y)


def test_lambda_zero_equals_plain(lm):
    model, vocab, level = lm
    ids = _repetitive(vocab)
    r = cache_evaluate(model, ids, CacheConfig(50, 0.0, 1.0), batch_size=2, bptt=7)
    plain = evaluate(model, ids, batch_size=2, bptt=7)
    assert r.cached.loss == r.plain.loss
    assert r.plain.loss == pytest.approx(plain.loss, rel=1e-6)
    assert r.cached.tokens == plain.tokens


@pytest.mark.parametrize("window,bptt", [(5, 3), (7, 20), (200, 4)])
def test_vectorized_cache_matches_the_formula(lm, window, bptt):
    model, vocab, level = lm
    ids = torch.cat([_repetitive(vocab, 3), torch.randint(0, len(vocab), (20,))])
    r = cache_evaluate(model, ids, CacheConfig(window, 0.3, 0.7), batch_size=1, bptt=bptt)
    assert r.cached.loss == pytest.approx(_reference(model, ids, window, 0.3, 0.7), rel=1e-5)


def test_cache_lowers_ppl_on_repetitive_text(lm):
    model, vocab, level = lm
    r = cache_evaluate(model, _repetitive(vocab), CacheConfig(100, 0.3, 1.0), 1, 10)
    assert r.cached.ppl < 0.7 * r.plain.ppl


def test_search_picks_the_best_pair(lm):
    model, vocab, level = lm
    ids = _repetitive(vocab)
    s = cache_search(model, ids, 100, lambdas=(0.0, 0.1, 0.5), thetas=(0.1, 1.0))
    assert len(s.grid) == 6
    best = min(s.grid, key=lambda g: g[2])
    assert (s.best.lam, s.best.theta) == best[:2]
    assert s.best.lam > 0  # the repetitive text rewards the cache
    one = cache_evaluate(model, ids, s.best)
    assert one.cached.loss == pytest.approx(best[2], rel=1e-6)


def test_bad_cache_settings():
    for cfg in (
        CacheConfig(0),
        CacheConfig(10, 1.0),
        CacheConfig(10, -0.1),
        CacheConfig(10, 0.1, -1),
    ):
        with pytest.raises(ValueError):
            cfg.validate()


def test_cli_cache_and_search_report_plain_beside(run, capsys):
    assert main(["evaluate", str(run), "--split", "valid", "--cache", "--json", "--quiet"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"split", "tokens", "loss", "ppl", "bpc", "plain_ppl", "plain_loss"} <= set(d)
    assert d["cache_lambda"] == 0.1 and d["split"] == "valid"
    plain_cmd = ["evaluate", str(run), "--split", "valid", "--json", "--quiet"]
    assert main(plain_cmd) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == pytest.approx(d["plain_ppl"], rel=1e-6)
    assert main(["evaluate", str(run), "--search", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["split"] == "test" and s["search"]["split"] == "valid"
    assert s["search"]["best_ppl"] <= s["search"]["plain_ppl"] + 1e-9
