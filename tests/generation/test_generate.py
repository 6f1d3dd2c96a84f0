import math

import pytest
import torch

from helpers import tiny_config, write_corpus
from lstmlm import storage as checkpoint
from lstmlm.data.tokenize import detokenize
from lstmlm.data.vocab import EOS
from lstmlm.generation import SampleConfig
from lstmlm.generation.sampling import (
    apply_repetition_penalty,
    next_token,
    sample_ids,
    sampling_distribution,
)
from lstmlm.generation.text import encode_prompt, generate, stream, token_piece
from lstmlm.training import start_run


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    start_run(tiny_config(write_corpus(d / "corpus.txt"), epochs=4, lr=10.0), d / "run")
    model, vocab, info = checkpoint.load_run(d / "run")
    return model, vocab, info.level


def _gen(lm, prompt="the cat", **kw):
    model, vocab, level = lm
    return generate(model, vocab, level, prompt, SampleConfig(**kw))


# --- the filters, on logits ------------------------------------------------------


def test_top_k_keeps_exactly_k_most_likely():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    probs = sampling_distribution(logits, 1.0, top_k=7)
    assert ((probs > 0).sum(-1) == 7).all()
    kept = probs > 0
    top = torch.zeros_like(kept).scatter_(1, logits.topk(7).indices, True)
    assert torch.equal(kept, top)
    assert torch.allclose(probs.sum(-1), torch.ones(4))


def test_adjusted_top_k_per_row():
    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))
    probs = sampling_distribution(logits, 1.0, top_k=torch.tensor([1, 4, 9]))
    assert (probs > 0).sum(-1).tolist() == [1, 4, 9]


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9, 0.99])
def test_top_p_keeps_smallest_set_with_mass_at_least_p(p):
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(2)) * 2
    full = torch.softmax(logits, -1)
    probs = sampling_distribution(logits, 1.0, top_p=p)
    for row in range(5):
        sorted_p, order = full[row].sort(descending=True)
        n = int((sorted_p.cumsum(0) < p).sum()) + 1  # smallest n with mass >= p
        assert set(probs[row].nonzero().flatten().tolist()) == set(order[:n].tolist())
        assert sorted_p[:n].sum() >= p - 1e-6 and sorted_p[: n - 1].sum() < p
    assert torch.allclose(probs.sum(-1), torch.ones(5))


def test_low_temperature_is_greedy():
    logits = torch.randn(6, 20, generator=torch.Generator().manual_seed(3))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    assert torch.equal(next_token(logits, 1e-4, 0, gens), logits.argmax(-1))
    assert torch.equal(next_token(logits, 0.0, 0, None), logits.argmax(-1))


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0, -0.5]])
    seen = torch.tensor([[True, True, False, False, False]])
    before = torch.softmax(logits, -1)
    after = torch.softmax(apply_repetition_penalty(logits, seen, 1.5), -1)
    assert (after[seen] < before[seen]).all()
    assert (after[~seen] > before[~seen]).all()
    pen = apply_repetition_penalty(logits, seen, 1.5)
    assert pen[0, :2].tolist() == pytest.approx([2.0 / 1.5, -1.5])


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(4000, -1)
    gen = torch.Generator().manual_seed(0)
    toks = next_token(logits, 1.0, 3, gen)
    freq = torch.bincount(toks, minlength=5).float() / 4000
    want = sampling_distribution(logits[:1], 1.0, top_k=3)[0]
    assert freq[3:].sum() == 0
    assert torch.allclose(freq, want, atol=0.03)


# --- the loop, on a trained model -----------------------------------------------


def test_greedy_equals_argmax_of_the_model(lm):
    model, vocab, level = lm
    ids, _ = encode_prompt("the cat", vocab, level)
    new = torch.stack(list(sample_ids(model, ids, SampleConfig(20, temperature=0)))).squeeze(1)
    full = torch.tensor(ids + new.tolist()).unsqueeze(1)  # (T, 1)
    with torch.no_grad():
        logits = model(full).logits[:, 0]  # (T, V)
    assert torch.equal(logits[len(ids) - 1 : -1].argmax(-1), new)


def test_tiny_temperature_equals_greedy(lm):
    assert _gen(lm, max_new_tokens=25, temperature=1e-5, seed=4) == _gen(
        lm, max_new_tokens=25, temperature=0
    )


def test_same_seed_same_text_and_other_seed_other_text(lm):
    a = _gen(lm, max_new_tokens=30, seed=11)
    assert a == _gen(lm, max_new_tokens=30, seed=11)
    assert a != _gen(lm, max_new_tokens=30, seed=12)


def test_parallel_samples_equal_one_by_one(lm):
    kw = dict(max_new_tokens=25, top_k=5, top_p=0.95, repetition_penalty=1.2)
    batch = _gen(lm, seed=20, num_return_sequences=4, **kw)
    alone = [_gen(lm, seed=20 + i, **kw)[0] for i in range(4)]
    assert batch == alone
    assert len(set(batch)) > 1


def test_sample_ids_yields_one_tensor_per_step(lm):
    model, vocab, level = lm
    ids, _ = encode_prompt("", vocab, level)
    steps = list(sample_ids(model, ids, SampleConfig(7, 1.0, 0, 5, 3)))  # positional, as before
    assert len(steps) == 7 and all(s.shape == (3,) for s in steps)


def test_stop_string_cuts_the_text(lm):
    text = _gen(lm, max_new_tokens=30, temperature=0)[0]
    word = text.split()[3]
    cut = _gen(lm, max_new_tokens=30, temperature=0, stop_strings=(word,))[0]
    assert cut == text[: text.find(word)]
    assert word not in cut


def test_stream_joins_to_generate(lm):
    model, vocab, level = lm
    for stop in ((), ("the p",), ("xyz", "he ")):
        cfg = SampleConfig(40, seed=5, stop_strings=stop)
        pieces = list(stream(model, vocab, level, "she", cfg))
        assert "".join(pieces) == generate(model, vocab, level, "she", cfg)[0]
        assert len(pieces) > 1


def test_stop_at_eos_and_min_new_tokens(lm):
    texts = _gen(lm, "", max_new_tokens=40, seed=3, num_return_sequences=4, stop_at_eos=True)
    full = _gen(lm, "", max_new_tokens=40, seed=3, num_return_sequences=4)
    assert all("\n" in t for t in full)
    assert texts == [t.split("\n")[0] for t in full]  # the same draws, cut at the line end
    longer = _gen(
        lm,
        "",
        max_new_tokens=40,
        seed=3,
        num_return_sequences=4,
        stop_at_eos=True,
        min_new_tokens=8,
    )
    assert all(len(t.split()) >= 8 and "\n" not in t for t in longer)


def test_adjusted_top_k_shrinks_to_greedy(lm):
    # decay so strong that k = 1 past the first token of a line; the prompt is mid-line,
    # so the first line is greedy whatever the seed, and later lines start varied.
    kw = dict(max_new_tokens=30, top_k=20, top_k_decay=0.01)
    runs = [_gen(lm, "the cat", seed=s, **kw)[0] for s in range(6)]
    greedy = _gen(lm, "the cat", max_new_tokens=30, temperature=0)[0]
    assert {r.split("\n")[0] for r in runs} == {greedy.split("\n")[0]}
    # (the words after the first line break: a line may be empty, so not line 2's first word)
    assert len({tuple(r.split("\n", 1)[1].split()[:3]) for r in runs}) > 1


@pytest.mark.parametrize("level", ["word", "char", "symbols"])
def test_token_pieces_join_to_detokenize(level):
    toks = ["a", "b", EOS, EOS, "c", "_", "d", EOS, "e"]
    pieces, prev = [], None
    for t in toks:
        pieces.append(token_piece(t, prev, level))
        prev = t
    assert "".join(pieces) == detokenize(toks, level)


@pytest.mark.parametrize(
    "kw",
    [
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(top_k_decay=0.0),
        dict(repetition_penalty=0.0),
        dict(min_new_tokens=-1),
        dict(stop_strings=("",)),
        dict(stop_strings="abc"),
        dict(precision="fp16"),
    ],
)
def test_bad_options_are_value_errors(kw):
    with pytest.raises(ValueError):
        SampleConfig(**kw).validate()


@pytest.mark.parametrize(
    "kw",
    [
        dict(rnn="lstm", num_layers=2),
        dict(rnn="gru", num_layers=2, fc_layers=1),
        dict(rnn="lstm", num_layers=1, tie_weights=True, emb_size=6),  # adds a projection
        dict(rnn="lstm", num_layers=2, cell="manual"),  # lstmlm's hand-written layers
        dict(rnn="gru", num_layers=2, cell="manual"),
    ],
)
def test_fast_step_equals_forward(kw):
    from lstmlm.config import ModelConfig
    from lstmlm.nn.model import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**{"emb_size": 8, "hidden_size": 10, **kw}), 13).eval()
    step = model.stepper()
    tok = torch.tensor([3, 5, 7])
    state = model(torch.randint(0, 13, (4, 3))).state  # a non-zero state
    with torch.no_grad():
        logits, new = step(tok, state)
        out = model(tok.unsqueeze(0), state)
    assert step.__name__ == "fast"
    assert torch.allclose(logits, out.logits[0], atol=1e-6)
    for a, b in zip(new, out.state, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.shape == y.shape and torch.allclose(x, y, atol=1e-6)
    with torch.no_grad():  # later tokens take another route through the decoder
        tok2 = torch.tensor([1, 2, 4])
        logits2, _ = step(tok2, new)
        out2 = model(tok2.unsqueeze(0), out.state)
    assert torch.allclose(logits2, out2.logits[0], atol=1e-6)
    assert model.train().stepper().__name__ == "slow"  # dropout on: the model's own forward


def test_bf16_step_is_close_to_fp32_and_seeded(lm):

    model, vocab, level = lm
    tok = torch.tensor([3, 5])
    state = model(torch.randint(0, len(vocab), (4, 2))).state
    with torch.no_grad():
        full, _ = model.stepper()(tok, state)
        half, new = model.stepper("bf16")(tok, state)
    assert half.dtype == torch.float32 and half.shape == full.shape
    # bf16 weights and inputs (8 bits of mantissa): the same distribution, nearly
    p, q = torch.softmax(full, -1), torch.softmax(half, -1)
    assert (p - q).abs().max() < 0.02
    assert torch.equal(half.argmax(-1), full.argmax(-1))
    a = _gen(lm, max_new_tokens=12, seed=4, precision="bf16")
    assert a == _gen(lm, max_new_tokens=12, seed=4, precision="bf16")


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_bf16_step_runs_the_recurrent_matmuls_on_bf16_weights(rnn):
    from lstmlm.config import ModelConfig
    from lstmlm.nn.model import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(rnn=rnn, emb_size=8, hidden_size=10, num_layers=1), 13)
    model.eval()
    tok = torch.tensor([3, 5])
    state = model(torch.randint(0, 13, (4, 2))).state
    layer = model.rnn.layers[0]

    def mm(a, w):  # a bf16 matmul: bf16 operands, product rounded to bf16
        return torch.nn.functional.linear(a.bfloat16(), w.detach().bfloat16()).float()

    with torch.no_grad():
        x, h = model.embedding(tok), state[0][0][0]
        gi = mm(x, layer.weight_ih_l0) + layer.bias_ih_l0  # (B, G*H)
        gh = mm(h, layer.weight_hh_l0) + layer.bias_hh_l0
        if rnn == "lstm":
            i, f, g, o = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(f) * state[0][1][0] + torch.sigmoid(i) * torch.tanh(g)
            want = torch.sigmoid(o) * torch.tanh(c)
        else:
            (xr, xz, xn), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            want = (1 - z) * torch.tanh(xn + r * hn) + z * h
        got = model.stepper("bf16")(tok, state)[1][0][0][0]
        fp32 = model.stepper()(tok, state)[1][0][0][0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (fp32 - want).abs().max() > 1e-5  # the tolerance tells bf16 from fp32 weights


# --- extreme settings: greedy, never NaN ----------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=1e-40),  # x / 1e-40 overflows fp32: inf - inf was NaN
        dict(temperature=1e-300),  # rounds to 0 in fp32
        dict(top_p=1e-300),  # rounds to 0 in fp32: every token was masked
        dict(top_p=1e-9),
    ],
)
def test_vanishing_temperature_or_top_p_is_greedy(lm, kw):
    greedy = _gen(lm, max_new_tokens=15, temperature=0)
    assert _gen(lm, max_new_tokens=15, seed=5, **kw) == greedy


def test_a_tiny_repetition_penalty_still_samples_real_tokens(lm):
    model, vocab, _ = lm
    # positive logits / 1e-300 = inf in fp32; the step must stay a distribution
    logits = torch.tensor([[1.0, 3.0, -2.0, 0.5]])
    seen = torch.tensor([[True, False, True, True]])
    pen = apply_repetition_penalty(logits, seen, 1e-300)
    probs = sampling_distribution(pen, 1.0)
    assert torch.isfinite(probs).all() and probs.sum().item() == pytest.approx(1.0)
    assert probs[0].argmax().item() in (0, 3)  # the seen positives became the largest
    text = _gen(lm, max_new_tokens=10, seed=5, repetition_penalty=1e-300)[0]
    ids = vocab.encode(text.split())
    assert len(ids) >= 1 and all(0 <= i < len(vocab) for i in ids)


def test_non_finite_scores_are_a_value_error():
    with pytest.raises(ValueError, match="not finite"):
        next_token(torch.full((2, 5), float("nan")), 1.0, 0, None)


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_new_tokens="5"),
        dict(max_new_tokens=2.5),
        dict(temperature=None),
        dict(temperature="hot"),
        dict(top_k=2.5),
        dict(num_return_sequences=True),
        dict(seed=2**64),
        dict(seed=-1),
        dict(seed=1.5),
        dict(seed="abc"),
        dict(stop_strings=5),
        dict(temperature=float("inf")),
    ],
)
def test_wrong_types_and_ranges_are_value_errors(kw):
    with pytest.raises(ValueError):
        SampleConfig(**kw).validate()


def test_too_many_samples_at_once_is_a_value_error_before_any_work(lm):
    model, vocab, level = lm
    ids, _ = encode_prompt("the cat", vocab, level)
    with pytest.raises(ValueError, match="num_return_sequences .* too many"):
        next(sample_ids(model, ids, SampleConfig(1, num_return_sequences=10**9)))


def test_min_new_tokens_above_max_is_a_value_error():
    with pytest.raises(ValueError, match="min_new_tokens"):
        SampleConfig(5, min_new_tokens=10).validate()


# --- min_p, typical_p, no-repeat n-grams, do_sample, output_scores --------------------


def test_min_p_drops_tokens_under_a_fraction_of_the_best():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(3)) * 2
    full = torch.softmax(logits, -1)
    probs = sampling_distribution(logits, 1.0, min_p=0.2)
    keep = full >= 0.2 * full.max(-1, keepdim=True).values
    assert torch.equal(probs > 0, keep)
    assert torch.allclose(probs, full * keep / (full * keep).sum(-1, keepdim=True))


@pytest.mark.parametrize("p", [0.3, 0.7, 0.95])
def test_typical_p_keeps_the_tokens_nearest_the_entropy(p):
    logits = torch.randn(3, 25, generator=torch.Generator().manual_seed(4)) * 2
    full = torch.softmax(logits.double(), -1)
    probs = sampling_distribution(logits, 1.0, typical_p=p)
    for row in range(3):
        q = full[row]
        entropy = -(q * q.log()).sum()
        order = ((-q.log()) - entropy).abs().argsort()  # most typical first
        mass = q[order].cumsum(0)
        n = int((mass < p).sum()) + 1  # smallest prefix with mass >= p
        assert set(probs[row].nonzero().flatten().tolist()) == set(order[:n].tolist())
    assert torch.allclose(probs.sum(-1), torch.ones(3))


def test_no_repeat_ngram_bans_exactly_the_repeating_tokens():
    from lstmlm.generation.filters import apply_no_repeat_ngram, banned_ngram_tokens

    history = [5, 6, 7, 5, 6, 9, 5, 6]  # "5 6" was followed by 7 and by 9
    assert sorted(banned_ngram_tokens(history, 3)) == [7, 9]
    assert banned_ngram_tokens(history, 2) == [7, 9]  # 6 was followed by 7 and 9
    logits = torch.zeros(2, 10)
    out = apply_no_repeat_ngram(logits, [history, [1, 2, 3]], 3)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [7, 9]
    assert not torch.isinf(out[1]).any()
    assert banned_ngram_tokens([1, 2], 3) == []


def test_generated_text_never_repeats_an_ngram(lm):
    model, vocab, level = lm
    cfg = SampleConfig(40, seed=2, no_repeat_ngram_size=2)
    ids, _ = encode_prompt("the cat", vocab, level)
    toks = [int(t) for t in sample_ids(model, ids, cfg)]
    seq = ids + toks
    grams = list(zip(seq, seq[1:], strict=False))
    assert len(grams) == len(set(grams))


def test_do_sample_false_is_greedy_whatever_the_temperature(lm):
    greedy = _gen(lm, max_new_tokens=20, temperature=0)
    assert _gen(lm, max_new_tokens=20, do_sample=False, temperature=1.5, seed=9) == greedy


def test_output_scores_are_the_models_log_probs_and_join_to_the_text(lm):
    from lstmlm.generation import complete

    model, vocab, level = lm
    cfg = SampleConfig(15, seed=4, output_scores=True, stop_strings=("park",))
    (c,) = complete(model, vocab, level, "the cat", cfg)
    assert "".join(s["text"] for s in c.token_scores) == c.text
    ids, _ = encode_prompt("the cat", vocab, level)
    new = [vocab.stoi[s["token"]] for s in c.token_scores]
    with torch.no_grad():
        logits = model(torch.tensor(ids + new).unsqueeze(1)).logits[:, 0]
    logp = torch.log_softmax(logits, -1)
    for i, s in enumerate(c.token_scores):
        assert s["logprob"] == pytest.approx(float(logp[len(ids) - 1 + i, new[i]]), abs=1e-4)
        assert s["bits"] == pytest.approx(-s["logprob"] / math.log(2))
