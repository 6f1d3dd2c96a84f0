"""How much raw text a split holds: the denominators that make levels comparable.

A word run's loss is per word token, a char run's per character, a bpe run's per piece:
the three per-token numbers cannot be compared. Bits per character and per-word
perplexity divide one total (the text's NLL) by one count of the text itself, the same
for every level. `TextStats` holds those counts for one split, counted on the text as
the run reads it (after `readers.normalize_text`: "\\n" line ends, `--lowercase`).

- chars: Unicode characters of the raw text, each line end one "\\n". At the symbols
  level (PTB-char files, "a _ b \\n") the raw text is the one the symbols spell: each
  symbol one character, `_` a space, the separating spaces not counted.
- words: whitespace-separated words of that raw text.
- tokens: tokens at the run's level (what the per-token loss is averaged over).

The numerator is the text's total NLL, estimated as the mean NLL per scored token times
`tokens`. Evaluation scores almost every token but not all (each column's first token
and the last N mod B tokens go unscored: `batching.eval_columns`, under 1/32 of them),
so the sum over the scored tokens would undercount a split; its mean times the split's
token count does not, and is the exact sum when every token is scored (`api.score`).

- bits per character = loss * tokens / (chars * ln 2)
- per-word perplexity = exp(loss * tokens / words)

At the char and symbols levels a token is a character (the line end's `<eos>` the
"\\n"), so bits per character equals bits per token there (to one `<eos>` when a text
lacks a final line end): the number an older run recorded as `bpc` at those levels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lstmlm.data.subword import chunks


@dataclass(frozen=True)
class TextStats:
    chars: int
    words: int
    tokens: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def total_nll(self, loss: float) -> float:
        """The text's NLL in nats from the mean NLL per scored token `loss` (module doc)."""
        return loss * self.tokens

    def bits_per_char(self, loss: float) -> float | None:
        """Bits per character of the raw text; None for a text of no characters."""
        if self.chars <= 0:
            return None
        return self.total_nll(loss) / (self.chars * math.log(2))

    def word_ppl(self, loss: float) -> float | None:
        """Per-word perplexity, exp(total NLL / words); None for a text of no words."""
        if self.words <= 0:
            return None
        x = self.total_nll(loss) / self.words
        return math.inf if x >= 700 else math.exp(x)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> TextStats:
        return cls(int(d["chars"]), int(d["words"]), int(d["tokens"]))


def raw_counts(text: str, level: str) -> tuple[int, int]:
    """(characters, words) of the raw text `text` read at `level` (see the module doc).

    Streams `text` in line-aligned chunks: no list of its words or lines is built.
    """
    chars = words = 0
    for piece in chunks(text):
        if level == "symbols":
            piece = "\n".join("".join(line.split()).replace("_", " ") for line in piece.split("\n"))
        chars += len(piece)
        words += len(piece.split())
    return chars, words


def text_stats(text: str, level: str, tokens: int) -> TextStats:
    """The counts of one split: `text` as read, `tokens` its length in ids at `level`."""
    chars, words = raw_counts(text, level)
    return TextStats(chars, words, tokens)
