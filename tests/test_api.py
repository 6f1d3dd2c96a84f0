import math
import subprocess
import sys

import pytest
import torch

import lstmlm
from helpers import lowercase_config, tiny_config, write_corpus, write_mixed_case_corpus
from lstmlm.api import TextModel
from lstmlm.config import ModelConfig
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.nn.model import LanguageModel
from lstmlm.training import start_run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    start_run(tiny_config(write_corpus(d / "corpus.txt"), epochs=2, lr=10.0), d / "run")
    return lstmlm.load(d / "run")


def test_import_stays_light():
    code = "import sys, lstmlm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_generate_returns_texts(model):
    texts = model.generate("the cat", max_new_tokens=12, seed=1, num_samples=3, top_k=5)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert texts == model.generate("the cat", max_new_tokens=12, seed=1, num_samples=3, top_k=5)


def test_stream_yields_the_same_text_piece_by_piece(model):
    kw = dict(max_new_tokens=20, temperature=0.8, top_p=0.9, seed=4, stop="\n\n")
    pieces = list(model.stream("she", **kw))
    assert len(pieces) > 1
    assert "".join(pieces) == model.generate("she", **kw)[0]


def test_score_matches_evaluate(model):
    text = "the cat sees the park\nshe likes a book\n"
    s = model.score(text)
    assert s["tokens"] == 11  # 9 words + 2 line ends, each scored
    # the text's own counts: 39 characters (line ends included), 9 words
    assert (s["chars"], s["words"]) == (39, 9)
    assert s["bpc"] == pytest.approx(s["loss"] * 11 / (39 * math.log(2)))
    assert s["word_ppl"] == pytest.approx(math.exp(s["loss"] * 11 / 9))
    ids = torch.tensor(model.vocab.encode([EOS, *"the cat sees the park".split(), EOS]
                                          + "she likes a book".split() + [EOS]))  # fmt: skip
    want = evaluate(model.model, ids, batch_size=1)
    assert s["loss"] == pytest.approx(want.loss, rel=1e-6)
    assert s["ppl"] < model.score("park the sees cat the\nbook a likes she\n")["ppl"]


def test_char_level_score_has_bpc():
    vocab = Vocab([EOS, "<unk>", *"abc "])
    m = TextModel(
        LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=1), 6), vocab, "char"
    )
    s = m.score("abc cab\n")
    assert s["tokens"] == s["chars"] == 8 and s["words"] == 2
    assert s["bpc"] == pytest.approx(s["loss"] / 0.6931471805599453)  # a token is a character
    assert s["word_ppl"] == pytest.approx(math.exp(s["loss"] * 8 / 2))


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError):
        model.generate("x", top_p=2.0)
    with pytest.raises(ValueError):
        model.score("")
    with pytest.raises(ValueError, match="no such run folder"):
        lstmlm.load(tmp_path / "nope")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.score(None),
        lambda m: m.score(5),
        lambda m: m.unknown_tokens(None),
        lambda m: m.generate("the", max_new_tokens="5"),
        lambda m: m.generate("the", seed=2**64),
        lambda m: m.generate("the", stop=5),
        lambda m: m.generate("the", num_samples=10**9, max_new_tokens=1),
    ],
)
def test_wrong_arguments_are_value_errors(model, call):
    with pytest.raises(ValueError):
        call(model)


def test_load_checks_which_and_the_path(model):
    with pytest.raises(ValueError, match="best' or 'last'"):
        lstmlm.load(model.run_dir, which="worst")
    with pytest.raises(ValueError, match="path"):
        lstmlm.load(None)


# --- a run trained with --lowercase reads prompts and scored text in lower case ---


@pytest.fixture(scope="module")
def lowercase_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("api-lower")
    corpus = write_mixed_case_corpus(d / "corpus.txt")
    start_run(lowercase_config(corpus, epochs=1, lr=10.0), d / "run")
    return lstmlm.load(d / "run")


def test_lowercase_run_knows_upper_case_prompts(lowercase_model):
    m = lowercase_model
    assert "the" in m.vocab and "THE" not in m.vocab  # training lower-cased its text
    assert m.unknown_tokens("THE CAT SEES THE PARK") == []
    assert m.unknown_tokens("The Zebra") == ["zebra"]  # as the model reads it


def test_lowercase_run_scores_upper_case_text_as_its_lower_case(lowercase_model):
    m = lowercase_model
    upper = m.score("THE CAT SEES THE PARK\nShe Likes A Book\n")
    assert upper == m.score("the cat sees the park\nshe likes a book\n")
    assert upper["tokens"] == 11


def test_lowercase_run_continues_upper_case_prompts_as_lower_case(lowercase_model):
    m = lowercase_model
    kw = dict(max_new_tokens=10, temperature=0.8, seed=2, num_samples=2)
    assert m.generate("THE OLD MAN", **kw) == m.generate("the old man", **kw)
    kw = dict(max_new_tokens=10, temperature=0.8, seed=2)
    assert list(m.stream("THE OLD MAN", **kw)) == list(m.stream("the old man", **kw))


def test_a_cased_run_keeps_the_case_of_prompts(model):
    assert model.lowercase is False
    assert model.unknown_tokens("THE cat") == ["THE"]


# --- Hugging Face names, prompt lists, per-token log-probabilities -------------------


def test_alias_names_work_and_equal_the_new_ones(model):
    kw = dict(max_new_tokens=12, seed=1, top_k=5)
    new = model.generate("the cat", num_return_sequences=3, stop_strings="\n", **kw)
    assert model.generate("the cat", num_samples=3, stop="\n", **kw) == new
    assert len(new) == 3
    with pytest.raises(ValueError, match="num_return_sequences or its alias num_samples"):
        model.generate("the", num_samples=2, num_return_sequences=2)


def test_a_prompt_list_gives_one_result_per_prompt(model):
    kw = dict(max_new_tokens=8, seed=3, num_return_sequences=2)
    out = model.generate(["the cat", "a dog", ""], **kw)
    assert len(out) == 3 and all(len(texts) == 2 for texts in out)
    assert out[1] == model.generate("a dog", **kw)


def test_beams_through_the_api(model):
    beams = model.generate("the cat", max_new_tokens=10, num_beams=4, num_return_sequences=2)
    assert len(beams) == 2 and beams[0] != beams[1]
    assert model.generate("the cat", max_new_tokens=10, num_beams=4)[0] == beams[0]


def test_score_returns_token_log_probs_that_add_up(model):
    text = "the cat sees the park\n"
    s = model.score(text, return_token_logprobs=True)
    toks = s["token_logprobs"]
    assert len(toks) == s["tokens"] == 6  # five words and the line end
    assert [t["token"] for t in toks] == ["the", "cat", "sees", "the", "park", "<eos>"]
    assert "".join(t["text"] for t in toks) == text
    assert -sum(t["logprob"] for t in toks) / len(toks) == pytest.approx(s["loss"], rel=1e-5)
    assert all(t["bits"] == pytest.approx(-t["logprob"] / math.log(2)) for t in toks)
    assert "token_logprobs" not in model.score(text)


def test_generate_output_scores(model):
    (out,) = model.generate("the cat", max_new_tokens=6, seed=2, output_scores=True)
    assert out["text"] == model.generate("the cat", max_new_tokens=6, seed=2)[0]
    assert len(out["tokens"]) == 6 and all(t["logprob"] <= 0 for t in out["tokens"])
    assert "".join(t["text"] for t in out["tokens"]) == out["text"]


def test_seedless_sampling_leaves_the_global_rng_alone(model):
    for call in (
        lambda: model.generate("the", max_new_tokens=8, temperature=1.0),
        lambda: model.generate("the", max_new_tokens=4, num_samples=3),
        lambda: "".join(model.stream("the", max_new_tokens=6)),
    ):
        torch.manual_seed(7)
        expected = torch.rand(4)
        torch.manual_seed(7)
        call()
        assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("method", ["encode", "tokens", "normalize", "unknown_tokens", "score"])
def test_text_methods_refuse_a_non_string(model, method):
    with pytest.raises(ValueError, match="must be a string, got int"):
        getattr(model, method)(5)


@pytest.mark.parametrize("value", ["no", "false", 1, 0, None])
def test_stop_at_eos_must_be_a_bool(model, value):
    with pytest.raises(ValueError, match="stop_at_eos must be true or false"):
        model.generate("the", max_new_tokens=3, stop_at_eos=value)
