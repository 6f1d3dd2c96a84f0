"""A subword tokenizer learns from a spread sample of a long train split, all of a short one."""

from __future__ import annotations

from lstmlm.config import DataConfig
from lstmlm.data import stream
from lstmlm.data.subword import train_tokenizer


def test_sample_keeps_every_kth_chunk_and_all_of_a_short_text() -> None:
    chunks = [f"chunk {i}\n" for i in range(10)]  # 8 characters each, 80 in all
    assert list(stream.sample(iter(chunks), 80, 80)) == chunks
    assert list(stream.sample(iter(chunks), 80, 1000)) == chunks
    assert list(stream.sample(iter(chunks), 80, 40)) == chunks[::2]
    assert list(stream.sample(iter(chunks), 80, 30)) == chunks[::3]


def test_a_text_under_the_cap_trains_the_same_tokenizer_as_before() -> None:
    text = "".join(f"line {i} of the book, said the reader\n" for i in range(300))
    cfg = DataConfig(vocab_size=300)
    vocab = stream.build_vocab(lambda: iter([text[:5000], text[5000:]]), "bpe", cfg)
    assert vocab.to_str() == train_tokenizer(text, "bpe", 300).to_str()


def test_a_text_over_the_cap_trains_on_the_sample(monkeypatch) -> None:
    # Two halves with disjoint words: with a cap of half the text and 1-character chunks
    # of `rechunk`, every second chunk is kept, so both halves are still seen.
    first = "".join("alpha beta gamma\n" for _ in range(50))
    second = "".join("omega sigma delta\n" for _ in range(50))
    monkeypatch.setattr(stream, "TOKENIZER_SAMPLE_CHARS", len(first + second) // 2)
    monkeypatch.setattr(
        stream, "rechunk", lambda pieces: (ln + "\n" for p in pieces for ln in p.splitlines())
    )
    cfg = DataConfig(vocab_size=280)
    vocab = stream.build_vocab(lambda: iter([first, second]), "bpe", cfg)
    lines = (first + second).splitlines(keepends=True)
    expected = train_tokenizer("".join(lines[::2]), "bpe", 280)
    assert vocab.to_str() == expected.to_str()
