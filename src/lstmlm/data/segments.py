"""Subword ids of a long text at a speed the Hugging Face tokenizer alone does not reach.

`tokenizers` 0.23 spends about 10 µs per pre-token in its byte-level pre-tokenizer and
model: about 1 MB/s of English on one core of this machine, 5x below the cache's target.
But a byte-level tokenizer's ids for a text are the concatenation of its ids for the
text's pieces, cut anywhere the GPT-2 split pattern (``'s|'t|...| ?\\p{L}+| ?\\p{N}+|
?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``) must start a new pre-token whatever follows, and
whatever came before: before a whitespace character that follows a non-whitespace one
(no alternative that matches non-whitespace can go on over whitespace, and none looks
behind). Such a piece, a *segment* (`` world,`` or ``\\n\\nThe``), recurs: WikiText-2's
2M of them are 37k distinct. `SegmentEncoder` cuts each chunk into segments with one
regular expression, encodes each distinct segment once (``encode_batch``: both cores)
and puts the chunk's ids together with numpy: about 8x faster, ids equal by
construction, and the tests check them against the tokenizer's own on Unicode text.

"Whitespace" must be the tokenizer's (Oniguruma's ``\\s``), not Python's (which takes
U+001C-U+001F too): the set is asked of the tokenizer itself, among Python's whitespace
and a few format characters that were whitespace in older Unicode. A tokenizer of
another shape (a normalizer, a prefix space, a post-processor) is encoded as it is,
without segments.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from array import array
from collections.abc import Iterable, Iterator
from itertools import chain, repeat

import numpy as np
from tokenizers import Tokenizer

from lstmlm.data.subword import CHUNK_CHARS

MAX_SEGMENTS = 1 << 20  # distinct segments remembered; then the memory starts afresh
# Format characters that some Unicode version or regex engine took for whitespace.
_FORMAT = "\u180e\u200b\u2060\ufeff"


def rechunk(pieces: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """The pieces of `subword.chunks("".join(pieces), size)`, never joining them all:
    the subword ids of a text depend on where its chunks end, so a text read in other
    pieces is cut where the in-memory path would have cut it."""
    buf = ""
    for piece in pieces:
        buf += piece
        while len(buf) > size:
            nl = buf.rfind("\n", 0, size)
            end = nl + 1 if nl >= 0 else size
            yield buf[:end]
            buf = buf[end:]
    if buf:
        yield buf


class SegmentEncoder:
    """The ids of chunks of text under `tokenizer`, each distinct segment encoded once."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.pattern = segment_pattern(tokenizer)
        self._forget()

    def _forget(self) -> None:
        self.index: dict[str, int] = {}
        self.pool = array("I")  # the ids of every known segment, back to back
        self.starts = array("q")  # segment i's ids: pool[starts[i] : starts[i] + lens[i]]
        self.lens = array("q")

    def encode(self, chunk: str) -> np.ndarray:
        """The ids of `chunk` (uint32), as `tokenizer.encode(chunk).ids`."""
        if self.pattern is None:
            return np.asarray(self.tok.encode(chunk).ids, dtype=np.uint32)
        segs = self.pattern.findall(chunk)
        if len(self.index) > MAX_SEGMENTS:
            self._forget()
        idx = np.fromiter(map(self.index.get, segs, repeat(-1)), np.int64, len(segs))
        if (idx < 0).any():
            self._learn([s for s in dict.fromkeys(segs) if s not in self.index])
            idx = np.fromiter(map(self.index.__getitem__, segs), np.int64, len(segs))
        starts = np.frombuffer(self.starts, np.int64)[idx]
        lens = np.frombuffer(self.lens, np.int64)[idx]
        ends = np.cumsum(lens)
        at = np.arange(int(ends[-1]) if ends.size else 0) + np.repeat(starts - ends + lens, lens)
        return np.frombuffer(self.pool, np.uint32)[at]

    def _learn(self, new: list[str]) -> None:
        """Encode the segments `new` (both cores) and remember their ids."""
        ids = [enc.ids for enc in self.tok.encode_batch(new)]
        lens = np.fromiter(map(len, ids), np.int64, len(ids))
        first = len(self.starts)
        self.starts.extend((len(self.pool) + np.cumsum(lens) - lens).tolist())
        self.lens.extend(lens.tolist())
        self.pool.extend(chain.from_iterable(ids))
        self.index.update(zip(new, range(first, first + len(new)), strict=True))


def segment_pattern(tok: Tokenizer) -> re.Pattern[str] | None:
    """The regular expression that cuts a text into segments (see the module doc), or
    None when `tok` is not the byte-level shape that makes segments safe."""
    d = json.loads(tok.to_str())
    pre = d.get("pre_tokenizer") or {}
    shape_ok = (
        d.get("normalizer") is None
        and d.get("post_processor") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("add_prefix_space") is False
        and pre.get("use_regex") is True
        and (d.get("model") or {}).get("type") in ("BPE", "Unigram")
    )
    if not shape_ok or tok.pre_tokenizer is None:
        return None
    split = tok.pre_tokenizer.pre_tokenize_str
    # "!" + c + "!" is one pre-token when c is not whitespace (punctuation or format
    # characters run together), two or three when it is.
    spaces = "".join(c for c in _candidates() if len(split(f"!{c}!")) > 1)
    added = [t.get("content", "") for t in d.get("added_tokens") or []]
    if any(c in t for t in added for c in spaces):  # an added token would span segments
        return None
    ws = "".join(f"\\u{ord(c):04x}" for c in spaces)
    return re.compile(f"[{ws}]*[^{ws}]+|[{ws}]+")


@functools.lru_cache(maxsize=1)
def _candidates() -> str:
    """Python's whitespace characters and `_FORMAT` (about 0.1 s, once)."""
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()) + _FORMAT
