"""Read training text from a .txt file, a folder of .txt files or an EPUB, and split it.

Every reader returns one ``str`` with "\\n" line endings. Problems a user can fix
(missing file, binary file, wrong encoding, ...) are reported as a one-line ``ValueError``
that starts with the offending path.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from lstmlm.data.epub import read_epub

log = logging.getLogger("lstmlm")
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CHUNK = 1 << 20  # bytes read at a time
MIN_READ_LIMIT = 64 << 20  # read this much of a file whose size says less (/proc files)


def read_text(path: str | Path, *, lowercase: bool = False) -> str:
    """Read a text file, a folder of ``*.txt`` files (recursively) or an ``.epub``.

    Folder members are read in order of their relative path and joined with "\\n".
    Text is decoded strictly as UTF-8 (a leading BOM is dropped) and "\\r\\n" / "\\r"
    become "\\n".
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such file or folder")
    if not (p.is_dir() or p.is_file()):  # /dev/zero, a FIFO, a socket: no end, or a hang
        raise ValueError(f"{path}: not a regular file (a device, pipe or socket); give a text file")
    if p.is_dir():
        text = _join(_read_file(f) for f in _txt_files(p))
    elif p.suffix.lower() == ".epub":
        text = read_epub(p)
    else:
        text = _read_file(p)
    if not text.strip():
        what = "folder's .txt files are" if p.is_dir() else "file is"
        raise ValueError(f"{path}: {what} empty (no text to read)")
    return normalize_text(text, lowercase=lowercase)


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
    _check_fractions(fractions)
    lines = text.split("\n")
    # Re-attach the separators so that joining the parts gives back ``text``.
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    n = len(lines)
    hint = "give the valid and test files explicitly"
    if n < 3:
        raise ValueError(f"text has only {n} line(s); need at least 3 to split it, or {hint}")
    # Boundaries by rounding the cumulative fractions, clamped so each part gets a line.
    a = min(max(round(n * fractions[0]), 1), n - 2)
    b = min(max(round(n * (fractions[0] + fractions[1])), a + 1), n - 1)
    parts = ("".join(lines[:a]), "".join(lines[a:b]), "".join(lines[b:]))
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        if not part.strip():
            raise ValueError(f"text has {n} lines but its {name} part would be blank; {hint}")
    return parts


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3:
        raise ValueError(f"split fractions must be 3 numbers (train, valid, test), got {fractions}")
    if not all(math.isfinite(f) and f > 0 for f in fractions):
        raise ValueError(f"split fractions must all be positive, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions} (sum {sum(fractions)})")


def _txt_files(folder: Path) -> list[Path]:
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
    """A text file's text: read in chunks, at most its size (a file that grows while read
    is refused), the first chunk checked for binary content before the rest is read.
    UTF-8 (a BOM dropped), or UTF-16 when it starts with a UTF-16 byte-order mark."""
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"{path}: not a regular file (a device, pipe or socket)")
            limit = max(os.fstat(f.fileno()).st_size, MIN_READ_LIMIT)
            chunks: list[bytes] = []
            done = 0
            utf16 = False
            while chunk := f.read(CHUNK):
                if not chunks:
                    utf16 = chunk.startswith(_UTF16_BOMS)
                if not utf16 and b"\x00" in chunk:
                    raise ValueError(
                        f"{path}: looks like a binary file (contains NUL bytes), not text"
                    )
                done += len(chunk)
                if done > limit:
                    raise ValueError(f"{path}: grows while it is read; give a finished file")
                chunks.append(chunk)
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e
    data = b"".join(chunks)
    if utf16:
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: file starts as UTF-16 but is not UTF-16 text") from e
        return text.replace("\r\n", "\n").replace("\r", "\n")
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + skip
        raise ValueError(f"{path}: file is not UTF-8 text (invalid byte at offset {offset})") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")
