"""Subword levels: byte-level BPE and unigram tokenizers (Hugging Face `tokenizers`).

Both levels work on bytes, not characters: the text's UTF-8 bytes are mapped to 256
printable stand-in characters (GPT-2's byte-level alphabet) by the `ByteLevel`
pre-tokenizer before the model (BPE merges or unigram pieces) sees them, and every one
of the 256 is in the vocabulary (`initial_alphabet`). So any text is encoded without
`<unk>`, and the `ByteLevel` decoder maps the pieces back to the exact bytes:
`decode(encode(t)) == t` for every UTF-8 text, newlines and spaces included (no
normalizer runs). The same holds for unigram, whose pieces are strings over that
alphabet too: byte-level pre-tokenizer and decoder rather than sentencepiece's byte
fallback, so both levels share one decoder and one incremental decoder for sampling.

`<eos>` (id 0) and `<unk>` (id 1) are special tokens, as in every vocabulary here;
at a subword level the newline is an ordinary byte inside the pieces and `<eos>` only
opens a prompt (as after a line break at the word level).
"""

from __future__ import annotations

import codecs
from array import array
from collections.abc import Iterable, Iterator
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

from lstmlm.data.vocab import EOS, UNK, Vocab

SUBWORD_LEVELS = ("bpe", "unigram")
SPECIALS = (EOS, UNK)
MIN_VOCAB_SIZE = 260  # the two specials, the 256 bytes, and room for a merge or two
MAX_DEFAULT_VOCAB_SIZE = 8000
CHARS_PER_TOKEN_TYPE = 200  # the default: one vocabulary entry per 200 train characters
CHUNK_CHARS = 1 << 20  # the text goes to the tokenizer in pieces of about 1M characters


def default_vocab_size(train_chars: int) -> int:
    """min(8000, max(512, train characters / 200)): a small text gets a small vocabulary
    (each piece then seen often enough to learn), a big one 8000."""
    return min(MAX_DEFAULT_VOCAB_SIZE, max(512, train_chars // CHARS_PER_TOKEN_TYPE))


def chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """`text` in pieces of about `size` characters, each ending at a line end when the
    text has one: the same text always gives the same pieces (and ids)."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            nl = text.rfind("\n", start, end)
            end = nl + 1 if nl >= start else end
        yield text[start:end]
        start = end


def train_tokenizer(text: str, level: str, vocab_size: int | None = None) -> Tokenizer:
    """A byte-level tokenizer of `level` trained on `text` (the train split only)."""
    return train_on_chunks(chunks(text), level, vocab_size or default_vocab_size(len(text)))


def train_on_chunks(pieces: Iterable[str], level: str, size: int) -> Tokenizer:
    """`train_tokenizer` of a text given as its `chunks` (a text that is never one string:
    the same pieces give the same tokenizer)."""
    if level not in SUBWORD_LEVELS:
        raise ValueError(f"unknown subword level {level!r}; use one of {SUBWORD_LEVELS}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer: trainers.Trainer
    if level == "bpe":
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=size,
            special_tokens=list(SPECIALS),
            initial_alphabet=alphabet,
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=size,
            special_tokens=list(SPECIALS),
            unk_token=UNK,
            initial_alphabet=alphabet,
            show_progress=False,
        )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(pieces, trainer)
    return tok


class SubwordVocab(Vocab):
    """The vocabulary of a subword tokenizer: id i is the tokenizer's own id i."""

    def __init__(self, tokenizer: Tokenizer, level: str):
        pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
        super().__init__([p if p is not None else "" for p in pieces])  # ids are dense
        tokenizer.encode_special_tokens = True  # "<eos>" written in a text is 5 bytes
        self.tokenizer = tokenizer
        self.level = level

    @classmethod
    def from_str(cls, text: str, level: str) -> SubwordVocab:
        """From a tokenizer.json's text; ValueError if it is not one."""
        try:
            tok = Tokenizer.from_str(text)
        except Exception as e:  # the Rust side raises plain Exception
            raise ValueError(f"not a tokenizer file ({e})") from None
        return cls(tok, level)

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def tokens(self, text: str) -> list[str]:
        """The pieces of a short text (a prompt, a text to score)."""
        return self.tokenizer.encode(text).tokens

    def encode_text(self, text: str) -> Tensor:
        """Token ids (N,) int64 of a whole text, in chunks (both cores where it helps)."""
        buf = array("q")
        pieces: list[str] = []
        for piece in chunks(text):
            pieces.append(piece)
            if len(pieces) == 2:  # encode_batch runs the two chunks in parallel
                _extend(buf, self.tokenizer, pieces)
                pieces = []
        _extend(buf, self.tokenizer, pieces)
        if not buf:
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(buf, dtype=torch.long).clone()  # (N,)

    def decode_ids(self, ids: list[int]) -> str:
        """The text of `ids`: the exact bytes back (specials left out)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _extend(buf: array, tok: Tokenizer, pieces: list[str]) -> None:
    for enc in tok.encode_batch(pieces) if pieces else ():
        buf.extend(enc.ids)


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: stand-in character -> byte. Printable
    Latin-1 bytes stand for themselves; the other 68 get the characters from U+0100 on."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in kept}
    extra = 0
    for b in range(256):
        if b not in kept:
            table[chr(0x100 + extra)] = b
            extra += 1
    return table


class ByteDecoder:
    """Sampled pieces to text one at a time: bytes are gathered until they make whole
    UTF-8 characters, so the pieces joined equal the decoded id sequence."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece(self, token: str) -> str:
        if token == EOS:
            return self._utf8.decode(b"", final=True) + "\n"
        if token == UNK:
            return ""
        table = _unicode_to_byte()
        return self._utf8.decode(bytes(table[c] for c in token if c in table))
