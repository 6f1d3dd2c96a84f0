"""The token cache: a text is read and tokenized once; later runs map its ids from disk.

Where it lives: ``$LSTMLM_TOKEN_CACHE`` when set (a folder; ``off`` or ``0`` turns the
cache off), else ``tokens/`` inside ``$LSTMLM_CACHE``, ``$XDG_CACHE_HOME/lstmlm`` or
``~/.cache/lstmlm``, the first of them set. Deleting the folder clears it; nothing else
refers to it. Inside:

- ``files/``: each text file's sha256, by its path and stat (the memo below);
- ``vocab/KEY.json``: the vocabulary (or subword tokenizer) a new run built from a
  text's train split, keyed by the text and the options that build it (level,
  ``--min-freq``, ``--max-vocab``, ``--vocab-size``);
- ``ids/KEY.tokens``: the token ids of the three splits, their character/word counts and
  the text's digest (``tokenfile.py``), keyed by the text and the vocabulary's own
  sha256, so a run that brings its vocabulary (``--resume``, ``evaluate``) finds them too.

Every entry is written whole through a temporary name and renamed (``files.atomic_write``)
and checked when read (a sha256 or CRC-32 of its contents); a bad one is removed and built
again, never used. A folder that cannot be written is a warning: the ids then go to an
unnamed temporary file, as with the cache off.

Why a memo of file digests: a key must name the text's content, and hashing a 1 GB text
at every start is itself a full read (about a second) of what the cache exists to skip.
``files/`` remembers a file's sha256 under (absolute path, size, mtime_ns, ctime_ns,
inode, device). Writing a file changes its mtime and ctime (ctime cannot be set back
from user space, unlike mtime with ``touch -d``), replacing it by rename changes the
inode, a copy has another path: each gets hashed afresh. Left open: two writes of the
same size within one tick of the file system's clock (a few ms) with the digest taken
between them; the first tokenizing pass over a plain text file hashes the bytes it
reads and refuses a file whose digest is not the key's, so such an entry never holds a
text other than its key's (a folder, EPUB or UTF-16 file, read whole, is not checked).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lstmlm import files
from lstmlm.data.subword import SubwordVocab
from lstmlm.data.vocab import Vocab

log = logging.getLogger("lstmlm")

ENV = "LSTMLM_TOKEN_CACHE"  # a folder, or off / 0
OFF = ("off", "0", "no", "false")
FORMAT = 1  # part of every key: a new layout or tokenizing rule never meets an old entry
STALE_TEMP_SECONDS = 24 * 3600  # a writer's temporary file this old was left by a crash
HASH_CHUNK = 8 << 20


def root() -> Path | None:
    """The cache folder, or None when the cache is off."""
    where = os.environ.get(ENV, "").strip()
    if where.lower() in OFF:
        return None
    if where:
        return Path(where).expanduser()
    if os.environ.get("LSTMLM_CACHE"):
        return Path(os.environ["LSTMLM_CACHE"]).expanduser() / "tokens"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG rule
    return base / "lstmlm" / "tokens"


def key(**parts: Any) -> str:
    """A key: the sha256 of `parts` (JSON values) with the cache's format number."""
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def vocab_text(vocab: Vocab) -> str:
    """A vocabulary as its run file holds it: tokenizer.json or vocab.json."""
    return vocab.to_str() if isinstance(vocab, SubwordVocab) else vocab.to_json()


def vocab_sha256(vocab: Vocab) -> str:
    return hashlib.sha256(vocab_text(vocab).encode("utf-8")).hexdigest()


def file_sha256(path: Path, memo: Path | None = None) -> str:
    """The sha256 of a file's bytes, remembered in the folder `memo` under its stat."""
    p = path.resolve()
    for _ in range(3):
        st = p.stat()
        ident = f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
        name = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()
        if memo is not None:
            known = _read_small(memo / name)
            if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
                return known
        digest = _hash(p)
        if p.stat() == st:  # not written to while it was hashed
            if memo is not None:
                _try(files.atomic_write, memo / name, digest)
            return digest
    raise ValueError(f"{path}: keeps changing while it is read; give a finished file")


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e
    return h.hexdigest()


class Store:
    """The cache folder: the file-digest memo, vocabulary entries, token-file paths."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.memo = folder / "files"
        self.vocabs = folder / "vocab"
        self.ids = folder / "ids"

    @classmethod
    def open(cls) -> Store | None:
        """The cache, its folders made; None when it is off or cannot be written."""
        folder = root()
        if folder is None:
            return None
        store = cls(folder)
        try:
            for d in (store.memo, store.vocabs, store.ids):
                d.mkdir(parents=True, exist_ok=True)
            if not os.access(store.ids, os.W_OK):
                raise PermissionError(13, "not writable")
        except OSError as e:
            log.warning(
                "token cache %s cannot be used (%s); tokenizing without it (set %s to "
                "another folder, or to off)",
                folder,
                e.strerror or e,
                ENV,
            )
            return None
        store.remove_stale_temps()
        return store

    def file_sha256(self, path: Path) -> str:
        return file_sha256(path, self.memo)

    def ids_path(self, entry: str) -> Path:
        return self.ids / f"{entry}.tokens"

    def get_vocab(self, entry: str, level: str) -> Vocab | None:
        """The vocabulary stored under `entry`, or None (a bad entry is removed)."""
        path = self.vocabs / f"{entry}.json"
        raw = _read_small(path, limit=1 << 30)
        if not raw:
            return None
        try:
            d = json.loads(raw)
            text = d["vocab"]
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != d["sha256"]:
                raise ValueError("its checksum does not match")
            if d["level"] != level:
                raise ValueError(f"it is a {d['level']} vocabulary, not {level}")
            if d["subword"]:
                return SubwordVocab.from_str(text, level)
            return Vocab.from_json(text)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.discard(path, str(e))
            return None

    def put_vocab(self, entry: str, level: str, vocab: Vocab) -> None:
        text = vocab_text(vocab)
        blob = {
            "level": level,
            "subword": isinstance(vocab, SubwordVocab),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "vocab": text,
        }
        _try(lambda: files.atomic_write(self.vocabs / f"{entry}.json", json.dumps(blob)))

    def discard(self, path: Path, why: str) -> None:
        log.warning("token cache: %s is damaged (%s); it is built again", path, why)
        _try(lambda: path.unlink(missing_ok=True))

    def remove_stale_temps(self) -> None:
        """Temporary files of writers killed mid-write (a day old: no live writer's)."""
        now = time.time()
        for d in (self.memo, self.vocabs, self.ids):
            for tmp in d.glob(f".*{files.TMP_SUFFIX}"):
                _try(
                    lambda tmp=tmp: (
                        now - tmp.stat().st_mtime > STALE_TEMP_SECONDS
                        and tmp.unlink(missing_ok=True)
                    )
                )


def _read_small(path: Path, limit: int = 4096) -> str:
    """A small file's text, or "" when it is missing, unreadable or over `limit` bytes."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
        return data.decode("utf-8") if len(data) <= limit else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _try(action: Any, *args: Any) -> None:
    """Run `action(*args)`; a failed write to the cache (disk full, no permission) is a
    warning: the run goes on without that entry."""
    try:
        action(*args)
    except OSError as e:
        log.warning("token cache: cannot write (%s); going on without it", e.strerror or e)
