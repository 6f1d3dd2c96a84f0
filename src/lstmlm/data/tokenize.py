"""Text <-> tokens for the three levels.

- word: whitespace-separated words, `<eos>` at every line end (PTB/WikiText).
- char: every character a token, the newline is `<eos>`.
- symbols: whitespace-separated symbols with `<eos>` per line, as PTB-char
  files are written ("a _ b c \\n"); `_` marks a word boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lstmlm.data.vocab import EOS

LEVELS = ("word", "char", "symbols")


def lines(text: str) -> list[str]:
    """Split on newlines; a final newline does not open an empty line."""
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def tokenize(text: str, level: str) -> list[str]:
    return list(iter_tokens(text, level))


def iter_tokens(text: str, level: str) -> Iterator[str]:
    """The tokens of `tokenize`, one line at a time: a corpus is never a list of strings."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    return _iter_tokens(text, level)


def _iter_tokens(text: str, level: str) -> Iterator[str]:
    for line in lines(text):
        yield from line if level == "char" else line.split()
        yield EOS


def tokenize_prompt(text: str, level: str) -> list[str]:
    """Like `tokenize`, but a prompt without a newline gets no `<eos>`.

    At the symbols level a line already written as symbols ("t h e _ c a t": two or
    more single characters between spaces) is read as such; any other line is plain
    text, as generated text is shown: each character a symbol, each run of spaces `_`.
    """
    if level == "char":
        return [EOS if ch == "\n" else ch for ch in text.replace("\r\n", "\n")]
    toks: list[str] = []
    parts = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(parts):
        toks.extend(_symbols(line) if level == "symbols" else line.split())
        if i < len(parts) - 1:
            toks.append(EOS)
    return toks


def _symbols(line: str) -> list[str]:
    """The symbols of one prompt line (see `tokenize_prompt`)."""
    written = line.split()
    if len(written) > 1 and all(len(t) == 1 for t in written):
        return written
    spaced = " ".join(line.split())
    if line[:1].isspace() and spaced:
        spaced = " " + spaced
    if line[-1:].isspace() and spaced:
        spaced += " "
    return ["_" if ch == " " else ch for ch in spaced]


def detokenize(tokens: Iterable[str], level: str) -> str:
    if level == "char":
        return "".join("\n" if t == EOS else t for t in tokens)
    if level == "symbols":
        text = "".join("\n" if t == EOS else t for t in tokens)
        return text.replace("_", " ")
    words: list[str] = []
    for t in tokens:
        words.append("\n" if t == EOS else t)
    return " ".join(words).replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n")
