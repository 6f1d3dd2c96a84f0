"""Hostile input, fuzzed: a clear ValueError or correct handling, never a crash."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmlm.data.readers import read_text
from lstmlm.data.tokenize import detokenize, tokenize, tokenize_prompt
from lstmlm.data.vocab import EOS, UNK, Vocab
from lstmlm.generation.text import encode_prompt

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_read_or_refused_with_value_error(tmp_path, data):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    try:
        text = read_text(path)
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg
        return
    assert "\r" not in text and "\x00" not in text
    assert text.strip()


@FAST
@given(text=st.text(max_size=300))
def test_tokenize_handles_any_text(text):
    for level in ("word", "char", "symbols"):
        toks = tokenize(text, level)
        n_lines = len(text.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n").split("\n"))
        # A literal "<eos>" word is the vocabulary's own end of line (as in pytorch/examples).
        literal = 0 if level == "char" else text.split().count(EOS)
        assert toks.count(EOS) == n_lines + literal or not text
        assert all(t for t in toks)


@FAST
@given(text=st.text(alphabet=string.ascii_lowercase + " \n", max_size=200))
def test_char_level_round_trip(text):
    toks = tokenize(text, "char")
    out = detokenize(toks, "char")
    assert out == (text if text.endswith("\n") or not text else text + "\n")


@FAST
@given(prompt=st.text(max_size=200))
def test_prompts_of_unknown_or_control_characters_encode(prompt):
    vocab = Vocab.build(list("abc") + ["word"])
    for level in ("word", "char"):
        ids, unknown = encode_prompt(prompt, vocab, level)
        assert ids[0] == vocab.eos_id
        assert len(ids) == 1 + len(tokenize_prompt(prompt, level))
        assert all(0 <= i < len(vocab) for i in ids)
        # A literal "<unk>" in the prompt is the vocabulary's own word, not an unknown one.
        literal_unk = tokenize_prompt(prompt, level).count(UNK)
        assert ids.count(vocab.unk_id) == len(unknown) + literal_unk


def test_huge_single_line_is_one_line(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x " * 500_000)
    assert len(tokenize(read_text(path), "word")) == 500_001


def test_a_literal_unk_in_the_prompt_is_not_reported_unknown():
    vocab = Vocab.build(list("abc") + ["word"])
    ids, unknown = encode_prompt("word <unk> zebra", vocab, "word")
    assert ids[1:] == [vocab.encode(["word"])[0], vocab.unk_id, vocab.unk_id]
    assert unknown == ["zebra"]


def test_a_literal_eos_word_is_an_end_of_line_token():
    assert tokenize("a <eos> b", "word") == ["a", EOS, "b", EOS]
    assert tokenize("<eos>", "char") == [*"<eos>", EOS]
