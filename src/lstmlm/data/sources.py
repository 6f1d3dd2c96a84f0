"""Where a DataConfig's text comes from, what names it in the cache, and its three splits
read as pieces.

`resolve` finds the input files and checks that they exist, reading none of them.
`Source.key_parts` names the text by content: each file's sha256 (through the cache's
memo, so a known file is not read), how it is read (a text file, an EPUB, a folder's
files), `--lowercase`, and whether the splits are given or cut from one text. `Texts`
reads the splits, as often as the vocabulary and the ids need them:

- Plain UTF-8 files are streamed (`readers.iter_file_text`): one pass checks them and
  counts the lines of a text that is split by lines (`readers.split_points`, the same
  cut as `split_text`'s), later passes route each piece to its split, cutting a piece at
  a boundary line. No whole-text string is made.
- A folder of files, an EPUB or a UTF-16 file is read whole, as before the cache (their
  readers need the whole text), then handed out in pieces the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlm.config import DataConfig
from lstmlm.data import corpora, readers
from lstmlm.data.cache import Store
from lstmlm.data.subword import chunks
from lstmlm.data.tokenfile import SPLITS

PIECE = readers.CHUNK  # characters per piece of a text read whole


@dataclass(frozen=True)
class Source:
    inputs: Mapping[str, Path]  # train, valid, test; or train alone, split by lines
    level: str  # the corpus' own level, or the config's
    description: str  # where the text came from, for the model card
    lowercase: bool

    @property
    def split_by_lines(self) -> bool:
        return set(self.inputs) == {"train"}

    @property
    def streamed(self) -> bool:
        return all(readers.is_plain_file(p) for p in self.inputs.values())

    def key_parts(self, store: Store) -> tuple[dict[str, Any], dict[Path, str]]:
        """What names the text in the cache, and the sha256 of each plain file."""
        digests: dict[Path, str] = {}
        inputs: dict[str, Any] = {}
        for split, p in self.inputs.items():
            if p.is_dir():
                members = readers.txt_files(p)
                inputs[split] = {
                    "folder": [[f.relative_to(p).as_posix(), store.file_sha256(f)] for f in members]
                }
            else:
                digests[p] = store.file_sha256(p)
                kind = "epub" if p.suffix.lower() == ".epub" else "text"
                inputs[split] = {kind: digests[p]}
        how = "lines 0.9 0.05 0.05" if self.split_by_lines else "files"
        return {"inputs": inputs, "lowercase": self.lowercase, "splits": how}, digests


def resolve(cfg: DataConfig, store: Store | None = None) -> Source:
    """The inputs of `cfg`, checked to exist; a corpus' files checked against their
    sha256 (through the cache's memo when there is one)."""
    if cfg.corpus is not None:
        spec = corpora.CORPORA.get(cfg.corpus)
        if spec is None:
            raise ValueError(f"unknown corpus {cfg.corpus!r}; known: {', '.join(corpora.CORPORA)}")
        paths = corpora.find_corpus(cfg.corpus, cfg.data_dir, verify=store is None)
        if store is not None:  # checked through the memo: a known file is not read again
            root = paths["train"].parents[len(Path(spec.paths["train"]).parts) - 1]
            expected = corpora.expected_sha256(spec, root)
            if any(store.file_sha256(p) != expected[s] for s, p in paths.items()):
                corpora.find_corpus(cfg.corpus, cfg.data_dir)  # raises, in its own words
        where = str(Path(paths["train"]).parent)
        return Source(dict(paths), spec.level, f"{cfg.corpus} ({where})", cfg.lowercase)
    assert cfg.train is not None
    given = {"train": cfg.train}
    if cfg.valid is not None and cfg.test is not None:
        given |= {"valid": cfg.valid, "test": cfg.test}
    inputs = {split: readers.check_path(p) for split, p in given.items()}
    return Source(inputs, cfg.level, cfg.train, cfg.lowercase)


class Texts:
    """The splits of a source's text, read in pieces; `expected` holds the sha256 a
    streamed file must still have (the key's), so an entry never holds another text."""

    def __init__(self, src: Source, expected: Mapping[Path, str] | None = None):
        self.src = src
        self.expected = dict(expected or {})
        self._whole: dict[str, str] | None = None  # texts read whole
        self._cuts: tuple[int, int, int] | None = None  # lines: (a, b, n), when split by lines
        self._checked = False

    def train(self) -> Iterator[str]:
        """The train split's pieces."""
        for split, pieces in self.splits():
            if split == "train":
                yield from pieces
                return

    def splits(self) -> Iterator[tuple[str, Iterator[str]]]:
        """(split, its pieces) for train, valid and test in turn; consume each split's
        pieces before asking for the next split."""
        self._check()
        if self._whole is not None:
            whole = self._whole
            return ((s, readers.aligned(chunks(whole[s], PIECE))) for s in SPLITS)
        if not self.src.split_by_lines:
            lc = self.src.lowercase
            return ((s, readers.iter_file_text(self.src.inputs[s], lowercase=lc)) for s in SPLITS)
        return _by_split(self._routed())

    def blank_error(self, split: str) -> ValueError:
        """The error for a blank split, in the words of the reader that made it."""
        if self._cuts is not None:
            return readers.blank_part(self._cuts[2], split)
        return readers.empty_text(self.src.inputs[split])

    def _check(self) -> None:
        """The first pass: read the text whole, or check each streamed file and count the
        lines of one that is split by lines."""
        if self._checked:
            return
        if not self.src.streamed:
            self._whole = self._read_whole()
        else:
            for p in self.src.inputs.values():
                lines = self._scan(p)
            if self.src.split_by_lines:
                self._cuts = (*readers.split_points(lines), lines)
        self._checked = True

    def _read_whole(self) -> dict[str, str]:
        lc = self.src.lowercase
        texts = {s: readers.read_text(p, lowercase=lc) for s, p in self.src.inputs.items()}
        if self.src.split_by_lines:
            return dict(zip(SPLITS, readers.split_text(texts["train"]), strict=True))
        return texts

    def _scan(self, path: Path) -> int:
        """Check a streamed file (readable, UTF-8, not blank, still the key's bytes);
        its number of lines, as `split_text` counts them."""
        h = hashlib.sha256()
        newlines, last, blank = 0, "\n", True
        for piece in readers.iter_file_text(path, digest=h):
            newlines += piece.count("\n")
            last = piece[-1]
            blank = blank and piece.isspace()
        if blank:
            raise readers.empty_text(path)
        if path in self.expected and h.hexdigest() != self.expected[path]:
            raise ValueError(f"{path}: changed while it was read; try again")
        return newlines + (last != "\n")

    def _routed(self) -> Iterator[tuple[str, str]]:
        """(split, piece) of the one text split by lines, in order."""
        assert self._cuts is not None
        a, b, _ = self._cuts
        line = 0  # lines before the current piece
        path, lc = self.src.inputs["train"], self.src.lowercase
        for piece in readers.iter_file_text(path, lowercase=lc):
            while piece:
                split, ends = _split_at(line, a, b)
                cut = _after_lines(piece, ends - line) if ends else -1
                if cut < 0:
                    line += piece.count("\n")
                    yield split, piece
                    break
                yield split, piece[:cut]
                line, piece = ends, piece[cut:]


def _split_at(line: int, a: int, b: int) -> tuple[str, int]:
    """The split of line `line` when valid is lines [a, b), and the line it ends before
    (0: test runs to the end)."""
    if line < a:
        return "train", a
    return ("valid", b) if line < b else ("test", 0)


def _after_lines(piece: str, k: int) -> int:
    """The index just after the k-th "\\n" of `piece`, or -1 if it has fewer."""
    if piece.count("\n") < k:
        return -1
    at = -1
    for _ in range(k):
        at = piece.index("\n", at + 1)
    return at + 1


def _by_split(pieces: Iterator[tuple[str, str]]) -> Iterator[tuple[str, Iterator[str]]]:
    """(split, piece) pairs in split order as (split, pieces) for each of SPLITS."""
    head: list[tuple[str, str] | None] = [next(pieces, None)]

    def run(split: str) -> Iterator[str]:
        while head[0] is not None and head[0][0] == split:
            yield head[0][1]
            head[0] = next(pieces, None)

    for split in SPLITS:
        group = run(split)
        yield split, group
        for _ in group:  # what the caller left unread
            pass
