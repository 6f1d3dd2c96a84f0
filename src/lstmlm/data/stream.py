"""Tokenize a text given in pieces: a new run's vocabulary and the ids, streamed.

No whole-text string and no Python list of the text's tokens: a piece (about 1 MB, ending
at a line end) is tokenized, counted, written and dropped. The rules are
`tokenize.iter_tokens`' (word and symbols: whitespace-separated, `<eos>` at every line
end; char: every character, the line end `<eos>`; the last line gets its `<eos>` with or
without a final newline), done a piece at a time rather than a token at a time:

- word, symbols: ``piece.replace("\\n", " <eos> ").split()`` is the piece's tokens (a
  written ``<eos>`` was always the `<eos>` token), looked up with one `map` over a dict
  into an `array`: about 40 MB/s on one core here.
- char: the piece's code points as a numpy array (UTF-32), looked up in a table of all
  0x110000 code points: over 200 MB/s.
- bpe, unigram: `segments.SegmentEncoder` on the chunks the in-memory path cuts.

A new word/char run needs its vocabulary (counted on train) before it has ids, which would
cost a second tokenizing pass. `encode_new` makes one: every token gets a provisional id
in order of first occurrence (a word's from a growing dict, a character's is its code
point), the provisional ids of all three splits go to a scratch token file and train's
are counted; the vocabulary follows from the counts (`Vocab.from_counts`, the same order
as `Vocab.build`), and `remap` turns the scratch file into the final one with one numpy
lookup per block. Subword levels train their tokenizer first (`build_vocab`), then encode.

The same pass counts each split's raw characters and words (`stats.raw_counts`; at the
word level the words are the tokens less the line ends, the same number without a second
split) and the sha256 of the three texts.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from lstmlm.config import DataConfig
from lstmlm.data.readers import aligned
from lstmlm.data.segments import SegmentEncoder, rechunk
from lstmlm.data.stats import TextStats, raw_counts
from lstmlm.data.subword import SUBWORD_LEVELS, SubwordVocab, default_vocab_size, train_on_chunks
from lstmlm.data.tokenfile import SPLITS, TokenFile, TokenWriter
from lstmlm.data.tokenize import LEVELS
from lstmlm.data.vocab import EOS, Vocab

CODEPOINTS = sys.maxunicode + 1
EOL = ord("\n")
SCRATCH_IDS = 1 << 32  # provisional ids are uint32
_DEFAULT_SIZE_CHARS = 8000 * 200  # default_vocab_size stops growing here
TOKENIZER_SAMPLE_CHARS = 64 << 20  # a subword tokenizer learns from at most about this much
REMAP_BLOCK = 1 << 22

Splits = Iterable[tuple[str, Iterable[str]]]  # (split, its pieces) in SPLITS order


def word_tokens(piece: str) -> list[str]:
    """The word/symbols tokens of a piece ending at a line end (a text's last piece may
    end without one: its `<eos>` is added at the end of the split)."""
    return piece.replace("\n", f" {EOS} ").split()


def codepoints(piece: str) -> np.ndarray:
    return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")


# Python's whitespace (str.isspace, what str.split splits on); tests check it against Python.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_SPACE = np.zeros(CODEPOINTS, dtype=bool)
_SPACE[[ord(c) for c in WHITESPACE]] = True


def count_words(cps: np.ndarray) -> int:
    """`len(text.split())` of a text given as its code points: the starts of its runs of
    non-whitespace, counted without a list of them."""
    space = _SPACE[cps]
    starts = ~space
    starts[1:] &= space[:-1]
    return int(np.count_nonzero(starts))


class _Lookup(dict[str, int]):
    """token -> id; a token not in it is `<unk>` (a C-speed `map(d.__getitem__, ...)`)."""

    def __init__(self, vocab: Vocab):
        super().__init__(vocab.stoi)
        self.unk = vocab.unk_id

    def __missing__(self, token: str) -> int:
        return self.unk


class _Index(dict[str, int]):
    """token -> provisional id, a new token getting the next id (first-occurrence order)."""

    def __missing__(self, token: str) -> int:
        self[token] = n = len(self)
        return n


def _ids(piece: str, level: str, table: Any) -> np.ndarray:
    """The (provisional or final) ids of a piece: `table` a dict for word/symbols, an
    array over code points for char (None: the code points themselves)."""
    if level == "char":
        cps = codepoints(piece)
        return cps if table is None else table[cps]
    return np.frombuffer(array("I", map(table.__getitem__, word_tokens(piece))), np.uint32)


class Tally:
    """What a pass learns of one split besides its ids: raw characters and words, tokens,
    `<unk>`s, whether it is blank, and (in `digest`) the texts' sha256, each text
    followed by a NUL as `Dataset.text_sha256` is defined."""

    def __init__(self, level: str, digest: Any):
        self.level, self.digest = level, digest
        self.chars = self.words = self.tokens = self.unk = 0
        self.blank = True
        self.last = "\n"

    def text(self, piece: str, ids: np.ndarray) -> None:
        """Count `piece`, whose ids are `ids` (at the char level, its code points give the
        words; at the word level, the tokens less the line ends are the words)."""
        if self.level == "word":
            chars, words = len(piece), ids.size - piece.count("\n")
        elif self.level == "char":
            chars, words = len(piece), count_words(codepoints(piece))
        else:
            chars, words = raw_counts(piece, self.level)
        self.chars += chars
        self.words += words
        self.blank = self.blank and (not piece or piece.isspace())
        self.last = piece[-1] if piece else self.last
        self.digest.update(piece.encode("utf-8", "surrogatepass"))

    def stats(self) -> dict[str, int]:
        return TextStats(self.chars, self.words, self.tokens).to_dict()


def _meta(tallies: dict[str, Tally], digest: Any, level: str) -> tuple[dict[str, Any], set[str]]:
    if list(tallies) != list(SPLITS):
        raise ValueError(f"expected the splits {SPLITS}, got {tuple(tallies)}")
    meta = {
        "level": level,
        "stats": {s: t.stats() for s, t in tallies.items()},
        "unk": {s: t.unk for s, t in tallies.items()},
        "text_sha256": digest.hexdigest(),
    }
    return meta, {s for s, t in tallies.items() if t.blank}


def encode_splits(
    splits: Splits, vocab: Vocab, level: str, out: TokenWriter
) -> tuple[dict[str, Any], set[str]]:
    """Encode the three splits under `vocab` into `out`: the token file's meta (stats,
    `<unk>` counts, text digest) and the blank splits."""
    digest, tallies = hashlib.sha256(), {}
    subword = isinstance(vocab, SubwordVocab)
    encode: Callable[[str], np.ndarray]
    if isinstance(vocab, SubwordVocab):
        encode = SegmentEncoder(vocab.tokenizer).encode
    elif level in LEVELS:
        table = char_table(vocab) if level == "char" else _Lookup(vocab)
        encode = lambda piece: _ids(piece, level, table)  # noqa: E731
    else:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    for split, pieces in splits:
        tally = tallies[split] = Tally(level, digest)
        for piece in rechunk(pieces) if subword else pieces:
            ids = encode(piece)
            tally.text(piece, ids)
            _write(out, split, tally, ids, vocab.unk_id)
        if not subword and tally.last != "\n":  # the last line still ends with <eos>
            _write(out, split, tally, np.array([vocab.eos_id], np.uint32), vocab.unk_id)
        digest.update(b"\0")
    return _meta(tallies, digest, level)


def _write(out: TokenWriter, split: str, tally: Tally, ids: np.ndarray, unk: int | None) -> None:
    out.add(split, ids)
    tally.tokens += ids.size
    if unk is not None:  # (provisional ids have no <unk> yet)
        tally.unk += int(np.count_nonzero(ids == unk))


def encode_new(
    splits: Splits, level: str, cfg: DataConfig, scratch: TokenWriter
) -> tuple[Vocab, np.ndarray, dict[str, Any], set[str]]:
    """One pass for a new word, symbols or char run (see the module doc): provisional
    ids to `scratch`. Returns the vocabulary, the provisional -> final id table, the
    meta (its `<unk>` counts still 0: `remap` counts them) and the blank splits."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    char = level == "char"
    index = None if char else _Index()
    counts = np.zeros(CODEPOINTS if char else 0, dtype=np.int64)
    first: list[int] = []  # char: code points in order of first occurrence in train
    digest, tallies = hashlib.sha256(), {}
    for split, pieces in splits:
        tally = tallies[split] = Tally(level, digest)
        for piece in pieces:
            ids = _ids(piece, level, index)
            tally.text(piece, ids)
            _write(scratch, split, tally, ids, None)
            if split == "train":
                counts = _count(counts, ids, first if char else None)
        if tally.last != "\n":
            end = EOL if char else index[EOS]  # type: ignore[index]
            _write(scratch, split, tally, np.array([end], np.uint32), None)
        digest.update(b"\0")
    if char:
        found = {chr(c): int(counts[c]) for c in first}
    else:
        found = {t: int(counts[i]) for t, i in index.items() if i < counts.size}  # type: ignore[union-attr]
    vocab = Vocab.from_counts(found, cfg.min_freq, cfg.max_vocab)
    if char:
        table = char_table(vocab)
    else:
        ids_of = _Lookup(vocab)
        table = np.fromiter(map(ids_of.__getitem__, index), np.uint32, len(index))  # type: ignore[arg-type]
    meta, blank = _meta(tallies, digest, level)
    return vocab, table, meta, blank


def _count(counts: np.ndarray, ids: np.ndarray, first: list[int] | None) -> np.ndarray:
    """`counts` plus the occurrences of `ids`; with `first` (char), code points seen for
    the first time are appended to it in order of their first position."""
    if first is not None:
        new = counts[ids] == 0
        new &= ids != EOL  # the line end is <eos>, never a vocabulary character
        if new.any():
            found, at = np.unique(ids[new], return_index=True)
            first.extend(found[np.argsort(at, kind="stable")].tolist())
    if first is not None and ids.size < counts.size // 16:  # a short piece: no 9 MB bincount
        found, n = np.unique(ids, return_counts=True)
        counts[found] += n
        return counts
    add = np.bincount(ids, minlength=counts.size)
    if add.size > counts.size:
        add[: counts.size] += counts
        return add
    counts += add
    return counts


def remap(scratch: TokenFile, table: np.ndarray, unk: int, out: TokenWriter) -> dict[str, int]:
    """Write `scratch`'s provisional ids through `table` to `out`; the `<unk>`s per split."""
    counts = {}
    for split in SPLITS:
        ids = scratch.tensor(split).numpy()
        counts[split] = 0
        for at in range(0, ids.size, REMAP_BLOCK):
            final = table[ids[at : at + REMAP_BLOCK]]
            out.add(split, final)
            counts[split] += int(np.count_nonzero(final == unk))
            scratch.release()  # the scratch file (4 bytes a token) never piles up in memory
    return counts


def char_table(vocab: Vocab) -> np.ndarray:
    """Every code point's id under a char vocabulary: its own, the line end `<eos>`,
    any other `<unk>`."""
    table = np.full(CODEPOINTS, vocab.unk_id, dtype=np.uint32)
    for i, tok in enumerate(vocab.itos):
        if len(tok) == 1:
            table[ord(tok)] = i
    table[EOL] = vocab.eos_id
    return table


def build_vocab(train: Callable[[], Iterator[str]], level: str, cfg: DataConfig) -> Vocab:
    """A new subword run's tokenizer, trained on passes over the train split's pieces."""
    if level not in SUBWORD_LEVELS:
        raise ValueError(f"{level!r} is not a subword level")
    total = sum(len(piece) for piece in train())
    size = cfg.vocab_size or default_vocab_size(min(total, _DEFAULT_SIZE_CHARS))
    pieces = sample(rechunk(train()), total, TOKENIZER_SAMPLE_CHARS)
    return SubwordVocab(train_on_chunks(pieces, level, size), level)


def sample(chunks: Iterable[str], total: int, cap: int) -> Iterator[str]:
    """Every k-th of `chunks` (about 1M characters each, `total` in all), k the smallest
    that keeps about `cap` characters: a text under `cap` is given whole, so its
    tokenizer is the one `subword.train_tokenizer` makes of it. A bigger one trains its
    tokenizer on chunks spread over all of it (as sentencepiece's input_sentence_size
    does): the trainer runs at 1-2 MB/s here, a 1 GB text would take 10-15 minutes."""
    k = max(1, -(-total // cap))  # ceil
    for i, chunk in enumerate(chunks):
        if i % k == 0:
            yield chunk


def encode_text(vocab: Vocab, text: str, level: str) -> np.ndarray:
    """The ids (uint32) of one short text, as a split of it would have them ("\\\\r\\\\n"
    and "\\\\r" end lines at the word and char levels, as in `tokenize.lines`)."""
    if level not in SUBWORD_LEVELS:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts: list[np.ndarray] = []

    class _Parts:  # a TokenWriter that keeps the ids
        def add(self, split: str, ids: np.ndarray) -> None:
            parts.append(ids)

    splits = [("train", aligned([text])), ("valid", []), ("test", [])]
    encode_splits(splits, vocab, level, _Parts())  # type: ignore[arg-type]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
