"""A token file: a text's token ids for its three splits, written once, memory-mapped.

Layout, so that the ids start page-aligned at offset 0 and each split is a view of the map:

    [train ids][valid ids][test ids]   little-endian uint16 (a vocabulary of at most
                                       65,536 entries) or uint32
    [header]                           JSON: the dtype, each split's length and CRC-32,
                                       and what a run needs besides (`meta`)
    [trailer: 16 bytes]                the header's length (u32) and CRC-32 (u32), the
                                       magic b"LSTMTOK1"

The ids are written as they are made (the trailer last), so a text of any size is never
held whole. `open_tokens` believes a file only when its size is the one the header
implies and every CRC agrees: a truncated, torn or changed file raises `BadTokenFile`
(and the cache builds it again), never gives wrong ids. The check reads the file once
(about 3 GB/s) with plain reads, which do not count against the process's memory.

Memory: `TokenFile.tensor` gives a view of a private read-only map; pages are read in as
the model's windows touch them and are the kernel's to drop (they are clean file pages).
`release` tells the kernel to drop this process's mappings of them now (MADV_DONTNEED),
so a long epoch over a corpus bigger than memory does not pile them up.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

SPLITS = ("train", "valid", "test")
MAGIC = b"LSTMTOK1"
TRAILER = struct.Struct("<II8s")  # header length, header CRC-32, magic
MAX_HEADER = 1 << 24
READ_CHUNK = 8 << 20
_DTYPES: dict[str, tuple[np.dtype[Any], torch.dtype]] = {
    "uint16": (np.dtype("<u2"), torch.uint16),
    "uint32": (np.dtype("<u4"), torch.uint32),
}


class BadTokenFile(ValueError):
    """A token file that is truncated, torn or changed."""


def dtype_for(vocab_size: int) -> str:
    """The narrowest id type that holds every id of a vocabulary of `vocab_size`."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


class TokenWriter:
    """Writes ids split by split (in SPLITS order) to an open binary file, then `close`s
    with the header and trailer. A split may be added in any number of pieces."""

    def __init__(self, f: BinaryIO, vocab_size: int):
        self.f = f
        self.dtype = dtype_for(vocab_size)
        self._np = _DTYPES[self.dtype][0]
        self.vocab_size = vocab_size
        self.lengths = {s: 0 for s in SPLITS}
        self.crcs = {s: 0 for s in SPLITS}
        self._at = 0  # index into SPLITS of the split being written

    def add(self, split: str, ids: np.ndarray) -> None:
        at = SPLITS.index(split)
        if at < self._at:
            raise ValueError(f"the {split} ids come after the {SPLITS[self._at]} ones")
        self._at = at
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(ids.max())} is outside the vocabulary")
        data = np.ascontiguousarray(ids, dtype=self._np)
        buf = data.tobytes()
        self.f.write(buf)
        self.lengths[split] += data.size
        self.crcs[split] = zlib.crc32(buf, self.crcs[split])

    def close(self, meta: dict[str, Any]) -> None:
        header = json.dumps(
            {"dtype": self.dtype, "lengths": self.lengths, "crc32": self.crcs, "meta": meta},
            ensure_ascii=True,
        ).encode()
        self.f.write(header)
        self.f.write(TRAILER.pack(len(header), zlib.crc32(header), MAGIC))
        self.f.flush()


class TokenFile:
    """An opened, checked token file: its `meta`, and each split's ids as a tensor view."""

    def __init__(self, f: BinaryIO, dtype: str, lengths: dict[str, int], meta: dict[str, Any]):
        self.dtype = dtype
        self.lengths = lengths
        self.meta = meta
        size = sum(lengths.values()) * _DTYPES[dtype][0].itemsize
        # A private map: pages stay the file's (clean, shared with the page cache) unless
        # written, which nothing here does; torch wants a writable buffer.
        self._map = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else None

    def tensor(self, split: str) -> Tensor:
        """The ids of `split`, (N,), a view of the map (uint16 or uint32)."""
        torch_dtype = _DTYPES[self.dtype][1]
        n = self.lengths[split]
        if n == 0 or self._map is None:
            return torch.zeros(0, dtype=torch_dtype)
        item = _DTYPES[self.dtype][0].itemsize
        offset = sum(self.lengths[s] for s in SPLITS[: SPLITS.index(split)]) * item
        return torch.frombuffer(self._map, dtype=torch_dtype, count=n, offset=offset)

    def release(self) -> None:
        """Drop this process's mappings of the pages read so far (they stay in the page
        cache; the next touch maps them again)."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if self._map is not None and advice is not None:
            self._map.madvise(advice)


def open_tokens(path_or_file: Path | BinaryIO) -> TokenFile:
    """Open and check a token file; `BadTokenFile` if it is not whole and unchanged,
    FileNotFoundError if there is none."""
    if isinstance(path_or_file, Path):
        with path_or_file.open("rb") as f:
            return _open(f, str(path_or_file))
    return _open(path_or_file, "the temporary token file")


def _open(f: BinaryIO, name: str) -> TokenFile:
    size = os.fstat(f.fileno()).st_size
    if size < TRAILER.size:
        raise BadTokenFile(f"{name}: truncated ({size} bytes)")
    f.seek(size - TRAILER.size)
    n, crc, magic = TRAILER.unpack(f.read(TRAILER.size))
    if magic != MAGIC or n > min(MAX_HEADER, size - TRAILER.size):
        raise BadTokenFile(f"{name}: not a whole token file")
    f.seek(size - TRAILER.size - n)
    raw = f.read(n)
    if zlib.crc32(raw) != crc:
        raise BadTokenFile(f"{name}: its header is damaged")
    try:
        header = json.loads(raw)
        dtype, lengths, crcs = header["dtype"], header["lengths"], header["crc32"]
        item = _DTYPES[dtype][0].itemsize
        lengths = {s: int(lengths[s]) for s in SPLITS}
        crcs = {s: int(crcs[s]) for s in SPLITS}
        meta = dict(header["meta"])
    except (ValueError, KeyError, TypeError) as e:
        raise BadTokenFile(f"{name}: its header is damaged ({e})") from None
    if sum(lengths.values()) * item + n + TRAILER.size != size:
        raise BadTokenFile(f"{name}: truncated or padded (size {size})")
    f.seek(0)
    for split in SPLITS:
        if _crc(f, lengths[split] * item) != crcs[split]:
            raise BadTokenFile(f"{name}: the {split} ids are damaged")
    return TokenFile(f, dtype, lengths, meta)


def _crc(f: BinaryIO, nbytes: int) -> int:
    crc = 0
    while nbytes:
        chunk = f.read(min(nbytes, READ_CHUNK))
        if not chunk:
            raise BadTokenFile("truncated while read")
        crc = zlib.crc32(chunk, crc)
        nbytes -= len(chunk)
    return crc
