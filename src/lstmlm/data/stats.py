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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lstmlm.data.subword import chunks


@dataclass(frozen=True)
class TextStats:
    chars: int
    words: int
    tokens: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

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
            piece = "\n".join(
                "".join(line.split()).replace("_", " ") for line in piece.split("\n")
            )
        chars += len(piece)
        words += len(piece.split())
    return chars, words


def text_stats(text: str, level: str, tokens: int) -> TextStats:
    """The counts of one split: `text` as read, `tokens` its length in ids at `level`."""
    chars, words = raw_counts(text, level)
    return TextStats(chars, words, tokens)
