"""The raw text's counts (data/stats.py): the denominators of bits per character and of
per-word perplexity, the same at every level."""

import math

import pytest

from lstmlm.data.stats import TextStats, raw_counts, text_stats
from lstmlm.data.subword import CHUNK_CHARS


@pytest.mark.parametrize(
    "text, level, chars, words",
    [
        ("the cat sat\non a mat\n", "word", 21, 6),
        ("the cat sat\non a mat\n", "char", 21, 6),
        ("the cat sat\non a mat\n", "bpe", 21, 6),
        ("t h e _ c a t _ s a t\no n _ a _ m a t\n", "symbols", 21, 6),  # the text it spells
        ("  two  spaces\n\n", "word", 15, 2),  # every character counts, blank lines too
        ("héllo wörld ✓\n", "char", 14, 3),  # characters, not bytes
        ("", "word", 0, 0),
    ],
)
def test_raw_counts(text, level, chars, words):
    assert raw_counts(text, level) == (chars, words)


def test_counts_do_not_depend_on_the_chunking():
    line = "one two three four five six seven\n"
    text = line * (2 * CHUNK_CHARS // len(line) + 7)  # three chunks
    assert raw_counts(text, "word") == (len(text), 7 * text.count("\n"))


def test_bits_per_char_and_word_ppl_by_hand():
    s = text_stats("the cat sat\non a mat\n", "word", 8)
    assert s == TextStats(21, 6, 8)
    loss = 2.5  # nats per token
    assert s.total_nll(loss) == 20.0
    assert s.bits_per_char(loss) == pytest.approx(20.0 / (21 * math.log(2)))
    assert s.word_ppl(loss) == pytest.approx(math.exp(20.0 / 6))
    assert TextStats.from_dict(s.to_dict()) == s


def test_empty_and_divergent_texts():
    assert TextStats(0, 0, 1).bits_per_char(1.0) is None
    assert TextStats(0, 0, 1).word_ppl(1.0) is None
    assert TextStats(5, 1, 5).word_ppl(1000.0) == math.inf
    assert TextStats(5, 1, 5).bits_per_char(math.inf) == math.inf
    assert math.isnan(TextStats(5, 1, 5).word_ppl(math.nan))
