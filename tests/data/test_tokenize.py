from lstmlm.data.tokenize import detokenize, tokenize, tokenize_prompt
from lstmlm.data.vocab import EOS


def test_word_level_has_eos_per_line():
    assert tokenize(" a b \n c \n", "word") == ["a", "b", EOS, "c", EOS]


def test_empty_lines_give_eos_only():
    assert tokenize("a\n\nb", "word") == ["a", EOS, EOS, "b", EOS]


def test_char_level_newline_is_eos():
    assert tokenize("ab\nc\n", "char") == ["a", "b", EOS, "c", EOS]


def test_mixed_newlines_are_normalized():
    assert tokenize("a\r\nb\rc", "char") == ["a", EOS, "b", EOS, "c", EOS]


def test_symbols_level_reads_ptb_char_as_is():
    text = "a _ b < u n k > \n c \n "
    assert tokenize(text, "symbols") == ["a", "_", "b", "<", "u", "n", "k", ">", EOS, "c", EOS, EOS]


def test_detokenize():
    assert detokenize(["a", "b", EOS, "c"], "word") == "a b\nc"
    assert detokenize(["h", "i", EOS], "char") == "hi\n"
    assert detokenize(["a", "_", "b", EOS], "symbols") == "a b\n"


def test_prompt_has_no_trailing_eos():
    assert tokenize_prompt("the cat", "word") == ["the", "cat"]
    assert tokenize_prompt("ab", "char") == ["a", "b"]
    assert tokenize_prompt("a\nb", "word") == ["a", EOS, "b"]


def test_symbols_prompt_reads_plain_text_or_symbols():
    # plain text, as the model's output is shown: spaces become the word mark `_`
    assert tokenize_prompt("the  cat ", "symbols") == ["t", "h", "e", "_", "c", "a", "t", "_"]
    assert tokenize_prompt("hi\nyo", "symbols") == ["h", "i", EOS, "y", "o"]
    # a line already written as PTB-char symbols is read as it is
    assert tokenize_prompt("t h e _ c a t", "symbols") == ["t", "h", "e", "_", "c", "a", "t"]
    assert tokenize_prompt("", "symbols") == []
    # and a plain prompt round-trips through the output's detokenizer
    assert detokenize(tokenize_prompt("the cat sat", "symbols"), "symbols") == "the cat sat"
