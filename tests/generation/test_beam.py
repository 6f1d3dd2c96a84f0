"""Beam search against greedy search and against every sequence, enumerated."""

import itertools
import math

import pytest
import torch

from lstmlm.config import ModelConfig
from lstmlm.generation import SampleConfig, beam_search, sample_ids
from lstmlm.generation.sampling import EOS_ID
from lstmlm.nn.model import LanguageModel

V = 4  # <eos>, <unk>, two words


@pytest.fixture(scope="module", params=["lstm", "gru"])
def model(request):
    torch.manual_seed(7)
    cfg = ModelConfig(rnn=request.param, emb_size=8, hidden_size=8, num_layers=2, dropout=0.0)
    m = LanguageModel(cfg, V).eval()
    with torch.no_grad():  # sharper distributions than the init's near-uniform ones
        m.decoder.weight.mul_(8.0)
    return m


def seq_logprob(model, prompt, tokens) -> float:
    """Sum of log p(token) over `tokens` after `prompt`, from one forward."""
    ids = torch.tensor(prompt + tokens).unsqueeze(1)  # (T, 1)
    with torch.no_grad():
        logits = model(ids).logits[:, 0]  # (T, V)
    logp = torch.log_softmax(logits.double(), -1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))


def all_sequences(max_len):
    """Every continuation of up to max_len tokens: ended by <eos>, or max_len long."""
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS_ID not in seq[:-1] and (seq[-1] == EOS_ID or n == max_len):
                yield list(seq)


def test_one_beam_is_greedy(model):
    prompt = [EOS_ID, 2]
    cfg = SampleConfig(12, num_beams=1, do_sample=False)
    greedy = [int(t) for t in sample_ids(model, prompt, SampleConfig(12, do_sample=False))]
    # num_beams=1 goes through beam_search too when called directly.
    (hyp,) = beam_search(model, prompt, cfg)
    assert hyp.tokens == greedy


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -1.0])
def test_enough_beams_find_the_best_sequence(model, length_penalty):
    prompt, max_len = [EOS_ID, 3], 4
    candidates = list(all_sequences(max_len))
    scored = [(seq_logprob(model, prompt, s) / len(s) ** length_penalty, s) for s in candidates]
    best_score, best = max(scored)
    cfg = SampleConfig(
        max_len, num_beams=len(candidates), stop_at_eos=True, length_penalty=length_penalty
    )
    top = beam_search(model, prompt, cfg)[0]
    assert top.tokens == best
    assert top.score == pytest.approx(best_score, abs=1e-4)
    assert sum(top.logprobs) == pytest.approx(seq_logprob(model, prompt, best), abs=1e-4)


def test_returned_beams_are_sorted_and_distinct(model):
    cfg = SampleConfig(5, num_beams=6, num_return_sequences=6, stop_at_eos=True)
    hyps = beam_search(model, [EOS_ID], cfg)
    assert len(hyps) == 6
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 6
    for h in hyps:
        assert h.score == pytest.approx(
            seq_logprob(model, [EOS_ID], h.tokens) / len(h.tokens), abs=1e-4
        )


def test_early_stopping_ends_once_num_beams_have_finished(model):
    cfg = dict(max_new_tokens=30, num_beams=2, stop_at_eos=True)
    early = beam_search(model, [EOS_ID], SampleConfig(**cfg, early_stopping=True))
    late = beam_search(model, [EOS_ID], SampleConfig(**cfg))
    assert early[0].score <= late[0].score + 1e-9  # the longer search is never worse


def test_beams_respect_no_repeat_ngrams(model):
    cfg = SampleConfig(8, num_beams=3, no_repeat_ngram_size=2)  # 16 bigrams exist
    (hyp,) = beam_search(model, [EOS_ID], cfg)
    grams = list(zip([EOS_ID, *hyp.tokens], hyp.tokens, strict=False))
    assert len(grams) == len(set(grams))


def test_more_sequences_than_beams_is_a_value_error(model):
    with pytest.raises(ValueError, match="num_return_sequences"):
        SampleConfig(5, num_beams=2, num_return_sequences=3).validate()


def test_log_probs_are_the_models(model):
    (hyp,) = beam_search(model, [EOS_ID, 2], SampleConfig(6, num_beams=3))
    for i in range(len(hyp.tokens)):
        lp = seq_logprob(model, [EOS_ID, 2, *hyp.tokens[:i]], [hyp.tokens[i]])
        assert hyp.logprobs[i] == pytest.approx(lp, abs=1e-4)
    assert not math.isnan(hyp.score)
