"""Corpora that come as zip archives: which members hold the splits, how to cut one
member into train/valid/test, and the SHA256SUMS that lets the split files be checked
later without the archive.

`download.py` checks an archive whole (size and sha256) before anything reads it; then
`extract_splits` streams the members (`zipfile` inflates as it reads and checks each
member's CRC at its end) into ``train.txt``, ``valid.txt`` and ``test.txt``, hashing what
it writes, and writes ``SHA256SUMS`` beside them in ``sha256sum`` format: the archive's
own sum first (so a folder made from another archive is noticed), then one line per
split file. The archive is not kept; ``sha256sum -c --ignore-missing SHA256SUMS`` checks
the folder by hand.

A one-member archive (enwik8, text8: 100,000,000 bytes) is cut by bytes, the standard
split being the first 90M / next 5M / last 5M. enwik8 is UTF-8 XML and a cut at a fixed
byte can fall inside a multi-byte character, so each cut moves forward to the next
character start (past the continuation bytes 0x80-0xBF that follow it, at most 3 in
UTF-8): every split is whole UTF-8 text, and train + valid + test is the member byte for
byte, which the member's published sha256, checked on the bytes written, confirms. text8
is ASCII: its cuts never move.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read from a member at a time
SPLITS = ("train", "valid", "test")
SUMS = "SHA256SUMS"
MAX_SUMS_BYTES = 1 << 16  # a SHA256SUMS file is a few lines; a bigger one is not ours

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


@dataclass(frozen=True)
class CorpusArchive:
    """A zip archive that holds a corpus: where to get it, its checksum, and its splits.

    Either ``members`` maps each split to the member that holds it (WikiText), or
    ``member`` holds the whole text and ``cut`` gives the bytes of train, valid and test
    (enwik8, text8; ``member_sha256`` is the member's published sha256, if any).
    """

    file: str  # the archive's file name, e.g. "enwik8.zip"
    sha256: str
    size: int  # bytes
    urls: tuple[str, ...]
    members: Mapping[str, str] = field(default_factory=dict, hash=False)
    member: str = ""
    cut: tuple[int, ...] = ()
    member_sha256: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))
        per_split = bool(self.members)
        if per_split == bool(self.member):
            raise ValueError(f"{self.file}: give either members (one per split) or member")
        if per_split and set(self.members) != set(SPLITS):
            raise ValueError(f"{self.file}: members must name train, valid and test")
        if not per_split and (len(self.cut) != 3 or min(self.cut) <= 0):
            raise ValueError(f"{self.file}: cut must be 3 positive byte counts")


def extract_splits(
    zip_path: Path,
    archive: CorpusArchive,
    dest: Path,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> dict[str, str]:
    """Write ``dest/{train,valid,test}.txt`` and ``dest/SHA256SUMS`` from a checked archive;
    return the sha256 of each split file by split. A broken archive, a missing member or a
    member of the wrong size is a ``ValueError`` naming the archive (the caller removes
    ``dest``)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            if archive.member:
                sums = _extract_cut(z, archive, dest, progress, chunk)
            else:
                sums = _extract_members(z, archive, dest, progress, chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"{archive.file}: not a readable zip archive ({e})") from e
    lines = [f"{archive.sha256}  {archive.file}"]
    lines += [f"{sums[split]}  {split}.txt" for split in SPLITS]
    with _new_file(dest / SUMS) as out:
        out.write(("\n".join(lines) + "\n").encode("ascii"))
    return sums


def read_sums(path: Path) -> dict[str, str]:
    """The sums of a SHA256SUMS file: {file name: sha256}; a ``ValueError`` naming the
    file when it cannot be read or is not in ``sha256sum`` format."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SUMS_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e
    sums: dict[str, str] = {}
    try:
        if len(data) > MAX_SUMS_BYTES:
            raise ValueError("too large")
        for line in data.decode("ascii").splitlines():
            digest, name = line.split("  ", 1)
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ValueError("not a sha256")
            sums[name] = digest
    except ValueError:  # UnicodeDecodeError and a line without two spaces included
        raise ValueError(f"{path}: not a SHA256SUMS file") from None
    return sums


def _member(z: zipfile.ZipFile, archive: CorpusArchive, name: str) -> zipfile.ZipInfo:
    try:
        return z.getinfo(name)
    except KeyError:
        raise ValueError(f"{archive.file}: the archive has no member {name!r}") from None


def _extract_members(
    z: zipfile.ZipFile,
    archive: CorpusArchive,
    dest: Path,
    progress: Progress | None,
    chunk: int,
) -> dict[str, str]:
    """One member per split, streamed into its split file."""
    infos = {split: _member(z, archive, archive.members[split]) for split in SPLITS}
    total = sum(info.file_size for info in infos.values())
    done = 0
    sums: dict[str, str] = {}
    for split in SPLITS:
        h = hashlib.sha256()
        with z.open(infos[split]) as src, _new_file(dest / f"{split}.txt") as out:
            while data := src.read(chunk):
                h.update(data)
                out.write(data)
                done += len(data)
                if progress is not None:
                    progress(done, total)
        sums[split] = h.hexdigest()
    return sums


def _extract_cut(
    z: zipfile.ZipFile,
    archive: CorpusArchive,
    dest: Path,
    progress: Progress | None,
    chunk: int,
) -> dict[str, str]:
    """The one member, cut into the three split files at character boundaries."""
    info = _member(z, archive, archive.member)
    expected = sum(archive.cut)
    if info.file_size != expected:
        raise ValueError(
            f"{archive.file}: member {archive.member!r} has {info.file_size:,} bytes, "
            f"expected {expected:,}"
        )
    paths = [dest / f"{split}.txt" for split in SPLITS]
    with z.open(info) as src, _new_file(paths[0]) as a, _new_file(paths[1]) as b:
        with _new_file(paths[2]) as c:
            cutter = Cutter((a, b, c), archive.cut)
            while data := src.read(chunk):
                cutter.write(data)
                if progress is not None:
                    progress(cutter.done, expected)
    if archive.member_sha256 and cutter.whole.hexdigest() != archive.member_sha256:
        raise ValueError(
            f"{archive.file}: member {archive.member!r} does not match its published sha256"
        )
    return {split: h.hexdigest() for split, h in zip(SPLITS, cutter.hashes, strict=True)}


class Cutter:
    """Writes a byte stream to several outputs: the first ``sizes[0]`` bytes to the first,
    and so on, each cut moved forward past UTF-8 continuation bytes to the next character
    start (the last output takes whatever is left). Hashes each output and the whole."""

    def __init__(self, outs: tuple[BinaryIO, ...], sizes: tuple[int, ...]):
        self.outs = outs
        self.ends: list[int] = []  # the nominal cut positions, in bytes from the start
        for size in sizes[:-1]:
            self.ends.append((self.ends[-1] if self.ends else 0) + size)
        self.hashes = [hashlib.sha256() for _ in outs]
        self.whole = hashlib.sha256()
        self.i = 0  # the output being written
        self.done = 0  # bytes written in all

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.i == len(self.ends):
                n = len(view)  # the last output takes the rest
            elif self.done < self.ends[self.i]:
                n = min(len(view), self.ends[self.i] - self.done)
            else:  # at or past the cut: continuation bytes stay with this output
                n = 0
                while n < len(view) and 0x80 <= view[n] < 0xC0:
                    n += 1
                if n == 0:
                    self.i += 1  # a character starts here: the next output does too
                    continue
            self._emit(view[:n])
            view = view[n:]

    def _emit(self, piece: memoryview) -> None:
        self.outs[self.i].write(piece)
        self.hashes[self.i].update(piece)
        self.whole.update(piece)
        self.done += len(piece)


@contextmanager
def _new_file(path: Path) -> Iterator[BinaryIO]:
    """A new file (never an existing one) opened for writing, synced to disk on success."""
    with path.open("xb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
