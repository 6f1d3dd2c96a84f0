"""Read training text from a .txt file, a folder of .txt files or an EPUB, and split it.

Every reader returns one ``str`` with "\\n" line endings. Problems a user can fix
(missing file, binary file, wrong encoding, ...) are reported as a one-line ``ValueError``
that starts with the offending path.

A plain file is also read in pieces (``iter_file_text``) by the token cache's first pass
over a text too big to hold as one string; ``read_text`` joins the same pieces, so both
read a file byte for byte alike and refuse it with the same words.
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lstmlm.data.epub import read_epub

log = logging.getLogger("lstmlm")
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CHUNK = 1 << 20  # bytes read at a time
MIN_READ_LIMIT = 64 << 20  # read this much of a file whose size says less (/proc files)
LONG_LINE = 8 << 20  # a piece of a line longer than this (characters) ends at a space
_SPACE = re.compile(r"\s")


def read_text(path: str | Path, *, lowercase: bool = False) -> str:
    """Read a text file, a folder of ``*.txt`` files (recursively) or an ``.epub``.

    Folder members are read in order of their relative path and joined with "\\n".
    Text is decoded strictly as UTF-8 (a leading BOM is dropped) and "\\r\\n" / "\\r"
    become "\\n".
    """
    p = check_path(path)
    if p.is_dir():
        text = _join(_read_file(f) for f in txt_files(p))
    elif p.suffix.lower() == ".epub":
        text = read_epub(p)
    else:
        text = _read_file(p)
    if not text.strip():
        raise empty_text(path, p.is_dir())
    return normalize_text(text, lowercase=lowercase)


def check_path(path: str | Path) -> Path:
    """`path` as a Path; ValueError unless it is a file or a folder that exists."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such file or folder")
    if not (p.is_dir() or p.is_file()):  # /dev/zero, a FIFO, a socket: no end, or a hang
        raise ValueError(f"{path}: not a regular file (a device, pipe or socket); give a text file")
    return p


def empty_text(path: str | Path, folder: bool = False) -> ValueError:
    what = "folder's .txt files are" if folder else "file is"
    return ValueError(f"{path}: {what} empty (no text to read)")


def is_plain_file(path: Path) -> bool:
    """A file `iter_file_text` reads in pieces: not a folder, an EPUB or UTF-16 text."""
    if not path.is_file() or path.suffix.lower() == ".epub":
        return False
    try:
        with path.open("rb") as f:
            return not f.read(2).startswith(_UTF16_BOMS)
    except OSError:
        return True  # iter_file_text reports it in its words


def iter_file_text(path: Path, *, lowercase: bool = False, digest: Any = None) -> Iterator[str]:
    """The text `read_text` reads from the plain file `path` (no empty check), in pieces
    of about 1 MB that end at a line end, or after a whitespace character inside a line
    longer than 8M characters (anywhere in one without any): no whole-text string. `digest` (a
    hashlib object) is fed the file's raw bytes as they are read.

    Lower-casing a piece that ends at a line end or a space gives what lower-casing the
    whole text gives (Python's final-sigma rule looks no further than the word).
    """
    return aligned(_file_pieces(path, digest), lowercase=lowercase)


def aligned(pieces: Iterable[str], *, lowercase: bool = False) -> Iterator[str]:
    """`pieces` joined and cut again where `iter_file_text` cuts; lower-cased if asked."""
    carry = ""
    for piece in pieces:
        text = carry + piece
        cut = text.rfind("\n") + 1
        if not cut and len(text) > LONG_LINE:  # after its last whitespace, if it has one
            space = _SPACE.search(text[::-1])
            cut = len(text) - space.start() if space else len(text)
        carry = text[cut:]
        if cut:
            yield text[:cut].lower() if lowercase else text[:cut]
    if carry:
        yield carry.lower() if lowercase else carry


def normalize_text(text: str, *, lowercase: bool = False) -> str:
    """``text`` as a run's training text was read: "\\r\\n" / "\\r" become "\\n", and with
    ``lowercase`` (the run's ``DataConfig.lowercase``) it is lower-cased.

    Everything that turns a user's text into ids for a trained run (prompts, scored
    text) passes it through here with the run's settings, as ``read_text`` does.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.lower() if lowercase else text


def split_text(
    text: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
) -> tuple[str, str, str]:
    """Split ``text`` by lines into contiguous (train, valid, test) parts.

    The first ``fractions[0]`` of the lines go to train, the next ``fractions[1]`` to
    valid, the rest to test. The split is deterministic and
    ``train + valid + test == text``.
    """
    lines = text.split("\n")
    # Re-attach the separators so that joining the parts gives back ``text``.
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    n = len(lines)
    a, b = split_points(n, fractions)
    parts = ("".join(lines[:a]), "".join(lines[a:b]), "".join(lines[b:]))
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        if not part.strip():
            raise blank_part(n, name)
    return parts


def split_points(
    n: int, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
) -> tuple[int, int]:
    """Where `split_text` cuts a text of `n` lines: valid is lines [a, b), train before,
    test after. ValueError for fewer than 3 lines."""
    _check_fractions(fractions)
    if n < 3:
        raise ValueError(f"text has only {n} line(s); need at least 3 to split it, or {_HINT}")
    # Boundaries by rounding the cumulative fractions, clamped so each part gets a line.
    a = min(max(round(n * fractions[0]), 1), n - 2)
    b = min(max(round(n * (fractions[0] + fractions[1])), a + 1), n - 1)
    return a, b


def blank_part(n: int, name: str) -> ValueError:
    return ValueError(f"text has {n} lines but its {name} part would be blank; {_HINT}")


_HINT = "give the valid and test files explicitly"


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3:
        raise ValueError(f"split fractions must be 3 numbers (train, valid, test), got {fractions}")
    if not all(math.isfinite(f) and f > 0 for f in fractions):
        raise ValueError(f"split fractions must all be positive, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions} (sum {sum(fractions)})")


def txt_files(folder: Path) -> list[Path]:
    """The folder's ``*.txt`` files, at any depth; a sub-folder that cannot be listed is
    a warning (its files are left out), the folder itself an error."""

    def unreadable(e: OSError) -> None:
        where = Path(e.filename) if e.filename else folder
        if where == folder:
            raise ValueError(f"{folder}: cannot read folder ({e.strerror or e})") from e
        log.warning("%s: cannot read folder (%s); its files are left out", where, e.strerror or e)

    files = [
        Path(root) / name
        for root, _, names in os.walk(folder, onerror=unreadable, followlinks=True)
        for name in names
        if name.lower().endswith(".txt") and (Path(root) / name).is_file()
    ]
    if not files:
        raise ValueError(f"{folder}: folder contains no .txt files")
    return sorted(files, key=lambda f: f.relative_to(folder).as_posix())


def _join(texts: Iterable[str]) -> str:
    """Concatenate texts, putting a "\\n" between two only when the first lacks one."""
    out: list[str] = []
    for text in texts:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(text)
    return "".join(out)


def _read_file(path: Path) -> str:
    """A text file's text (see `_file_pieces`)."""
    return "".join(_file_pieces(path))


def _file_pieces(path: Path, digest: Any = None) -> Iterator[str]:
    """A text file's text in pieces: read in chunks, at most its size (a file that grows
    while read is refused), each chunk checked for binary content before it is decoded.
    UTF-8 (a BOM dropped), or UTF-16 when it starts with a UTF-16 byte-order mark (then
    decoded whole). "\\r\\n" and "\\r" become "\\n"."""
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"{path}: not a regular file (a device, pipe or socket)")
            limit = max(os.fstat(f.fileno()).st_size, MIN_READ_LIMIT)
            chunks = _chunks(path, f, limit, digest)
            first = next(chunks, b"")
            if first.startswith(_UTF16_BOMS):
                yield _utf16(path, b"".join([first, *chunks]))
            else:
                yield from _utf8(path, first, chunks)
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e


def _chunks(path: Path, f: Any, limit: int, digest: Any) -> Iterator[bytes]:
    done = 0
    while chunk := f.read(CHUNK):
        done += len(chunk)
        if done > limit:
            raise ValueError(f"{path}: grows while it is read; give a finished file")
        if digest is not None:
            digest.update(chunk)
        yield chunk


def _utf16(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: file starts as UTF-16 but is not UTF-16 text") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _utf8(path: Path, first: bytes, rest: Iterator[bytes]) -> Iterator[str]:
    """Decode strictly, chunk by chunk; an error names its byte offset in the file. A
    "\\r" ending a chunk waits for the next one (it may start with "\\n")."""
    skip = len(_BOM) if first.startswith(_BOM) else 0
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0  # bytes given to the decoder so far (after the BOM)
    held = ""
    chunk: bytes | None = first[skip:]
    while chunk is not None:
        if b"\x00" in chunk:
            raise ValueError(f"{path}: looks like a binary file (contains NUL bytes), not text")
        pending = len(decoder.getstate()[0])
        final = not chunk
        try:
            text = held + decoder.decode(chunk, final=final)
        except UnicodeDecodeError as e:
            offset = fed - pending + e.start + skip
            raise ValueError(
                f"{path}: file is not UTF-8 text (invalid byte at offset {offset})"
            ) from e
        fed += len(chunk)
        held = "" if final or not text.endswith("\r") else "\r"
        text = text[: len(text) - len(held)]
        if text:
            yield text.replace("\r\n", "\n").replace("\r", "\n")
        chunk = None if final else next(rest, b"")
