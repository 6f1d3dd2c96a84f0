"""The streamed data path gives what the in-memory one gave: the same vocabulary (order
included), ids, per-split stats and text digest, at every level, on texts with "\\r\\n",
no final newline, blank lines and Unicode, read in pieces small enough to cut lines."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import old_load
from lstmlm.config import DataConfig
from lstmlm.data import readers, sources
from lstmlm.data.dataset import encode_ids, load_dataset
from lstmlm.data.segments import SegmentEncoder, rechunk
from lstmlm.data.subword import SubwordVocab, chunks, train_tokenizer

LINES = [
    "The cat sat on the mat.",
    "",
    'ΟΔΟΣ ΣΟΦΟΣ said: "hi" — naïve café, ǅemal İstanbul',
    "emoji 😀 and 中文 text\twith\ttabs  and   spaces ",
    "<eos> and <unk> written in the text",
    "   ",
    "odd spaces:\u00a0nbsp\u2028line-sep\u3000ideographic\x1cfile-sep\x85nel",
    "a _ b _ c   symbols-like",
]


def text(n: int = 60, end: str = "", newline: str = "\n") -> str:
    lines = [f"{LINES[i % len(LINES)]} {i}" if i % 5 else LINES[i % len(LINES)] for i in range(n)]
    lines[-3:] = ["valid line", "test line", "the very last line"]
    return newline.join(lines) + end


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few characters: every boundary case happens in a short text."""
    monkeypatch.setattr(readers, "CHUNK", 7)  # bytes read at a time (cuts UTF-8 sequences)
    monkeypatch.setattr(sources, "PIECE", 11)  # pieces of a text read whole


@pytest.fixture
def long_lines(monkeypatch):
    """Lines over 30 characters are cut at a whitespace character. Not at the symbols
    level, whose words run over spaces: there a line's pieces would split a word in
    two (as lines over 8M characters would)."""
    monkeypatch.setattr(readers, "LONG_LINE", 30)


def same(new, old, level):
    vocab, ids, stats, digest = old
    if isinstance(vocab, SubwordVocab):
        assert new.vocab.to_str() == vocab.to_str()
    else:
        assert new.vocab.itos == vocab.itos
    for split in ("train", "valid", "test"):
        assert getattr(new, split).tolist() == ids[split], split
    assert dict(new.stats) == stats
    assert new.text_sha256 == digest


CASES = [
    ("one file", {"end": "\n"}),
    ("no final newline", {"end": ""}),
    ("crlf", {"end": "\r\n", "newline": "\r\n"}),
    ("cr only", {"end": "\r", "newline": "\r"}),
    ("blank lines at the end", {"end": "\n\n\n"}),
]


PLAIN = [(lv, c, lc) for lv in ("word", "char", "symbols") for c in CASES for lc in (False, True)]
SUBWORD = [(lv, CASES[2], False) for lv in ("bpe", "unigram")]  # tokenizer training is slow


@pytest.mark.parametrize(
    "level, case, lowercase",
    PLAIN + SUBWORD,
    ids=[f"{p[0]}-{p[1][0]}-{p[2]}" for p in PLAIN + SUBWORD],
)
def test_one_file_split_by_lines(tmp_path, small_pieces, request, level, case, lowercase):
    _, shape = case
    if level != "symbols":
        request.getfixturevalue("long_lines")
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbf" + text(**shape).encode())
    cfg = DataConfig(train=str(p), lowercase=lowercase, min_freq=2 if level == "word" else 1)
    cfg = DataConfig(**{**cfg.__dict__, "vocab_size": 300 if level in ("bpe", "unigram") else None})
    new = load_dataset(cfg, level=level)
    # Hugging Face's unigram trainer learns slightly different pieces from run to run (its
    # threads add up floats in any order): compare the ids under the one tokenizer.
    same(new, old_load(cfg, level, new.vocab if level == "unigram" else None), level)


@pytest.mark.parametrize("level", ["word", "char", "bpe"])
def test_three_files(tmp_path, small_pieces, long_lines, level):
    paths = {}
    for split, body in {
        "train": text(40),
        "valid": "valid text\r\nno end",
        "test": "\n\nx\n",
    }.items():
        paths[split] = tmp_path / f"{split}.txt"
        paths[split].write_text(body, encoding="utf-8", newline="")
    cfg = DataConfig(
        train=str(paths["train"]),
        valid=str(paths["valid"]),
        test=str(paths["test"]),
        level=level,
        vocab_size=300 if level == "bpe" else None,
    )
    same(load_dataset(cfg), old_load(cfg, level), level)


@pytest.mark.parametrize("level", ["word", "char"])
def test_texts_read_whole_folder_and_utf16(tmp_path, small_pieces, level):
    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text(text(30, end=""), encoding="utf-8")
    (folder / "b" / "c.txt").write_text(text(30), encoding="utf-8")
    utf16 = tmp_path / "u16.txt"
    utf16.write_text(text(30), encoding="utf-16")
    for train in (folder, utf16):
        cfg = DataConfig(train=str(train), level=level)
        assert not sources.resolve(cfg).streamed
        same(load_dataset(cfg), old_load(cfg, level), level)


def test_the_same_errors_as_the_in_memory_path(tmp_path):
    cases = {
        "two.txt": b"only\ntwo lines\n",
        "blank-valid.txt": b"a\n" * 18 + b"\n" + b"b\n",
        "empty.txt": b" \n\t\n",
        "binary.txt": b"abc\x00def\n",
        "latin1.txt": b"ok\ncaf\xe9\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        cfg = DataConfig(train=str(tmp_path / name))
        with pytest.raises(ValueError) as old:
            old_load(cfg, "word")
        with pytest.raises(ValueError) as new:
            load_dataset(cfg)
        assert str(new.value) == str(old.value), name


lines_st = st.lists(
    st.text(
        st.characters(codec="utf-8", exclude_characters="\n\r")
        | st.sampled_from(" \t\x0b\x0c\x1c\x85\xa0\u2028\u3000_Σσ"),
        max_size=12,
    ),
    min_size=3,
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=lines_st, newline=st.sampled_from(["\n", "\r\n", "\r"]), end=st.booleans())
def test_any_text_at_word_and_char_level(tmp_path_factory, lines, newline, end):
    p = tmp_path_factory.mktemp("h") / "t.txt"
    p.write_bytes((newline.join(lines) + (newline if end else "")).encode())
    for level in ("word", "char"):
        cfg = DataConfig(train=str(p), lowercase=level == "char")
        try:
            old = old_load(cfg, level)
        except ValueError as e:
            with pytest.raises(ValueError) as new:
                load_dataset(cfg, level=level)
            assert str(new.value) == str(e)
            continue
        same(load_dataset(cfg, level=level), old, level)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(text(200) * 3, "bpe", 400)


@settings(max_examples=60, deadline=None)
@given(t=st.text(st.characters(codec="utf-8") | st.sampled_from(" \t\n\r\x1c\x1f\xa0\u2028\u180e")))
def test_segments_give_the_tokenizers_own_ids(bpe, t):
    assert SegmentEncoder(bpe).encode(t).tolist() == bpe.encode(t).ids


def test_segments_cover_the_special_whitespace_of_the_tokenizer(bpe):
    enc = SegmentEncoder(bpe)
    assert enc.pattern is not None
    spaced = "a\x1cb c\u2028d\x1fe"  # \x1c and \x1f are Python whitespace, not the tokenizer's
    assert enc.encode(spaced).tolist() == bpe.encode(spaced).ids
    assert enc.pattern.findall("a\x1cb c") == ["a\x1cb", " c"]


@given(
    t=st.text(st.sampled_from("ab \n")), cuts=st.lists(st.integers(0, 60)), size=st.integers(1, 9)
)
def test_rechunk_cuts_where_chunks_cuts(t, cuts, size):
    bounds = sorted({c for c in cuts if c < len(t)} | {0, len(t)})
    pieces = [t[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert list(rechunk(pieces, size)) == list(chunks(t, size))


@pytest.mark.parametrize("level", ["word", "char", "symbols"])
def test_encode_ids_of_a_short_text(level):
    from lstmlm.data.tokenize import iter_tokens, tokenize
    from lstmlm.data.vocab import Vocab

    vocab = Vocab.build(iter_tokens("the cat\non a mat\n", level))
    for t in ("", "the cat\r\nzebra", "x\n\n"):
        assert encode_ids(vocab, t, level).tolist() == vocab.encode(tokenize(t, level))


def test_whitespace_is_pythons_and_words_count_as_split_does():
    import sys

    from lstmlm.data.stream import WHITESPACE, codepoints, count_words

    assert set(WHITESPACE) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    for t in ["", " ", "a", " a  b\tc\n", "x\u3000y\x1cz ", "\n\n", "αβ γ"]:
        assert count_words(codepoints(t)) == len(t.split())
