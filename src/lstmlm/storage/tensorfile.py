"""Write the safetensors format straight from tensor memory, one tensor at a time.

`safetensors.torch.save` builds the whole file as one `bytes` object first (and copies
every tensor into bytes on the way), so saving a checkpoint briefly needs about twice its
size in extra memory: +100 MB at the medium size, the peak of a whole training run. This
writer streams: an 8-byte little-endian header length, the JSON header (dtype, shape and
byte range of each tensor, plus `__metadata__`), then each tensor's bytes in header
order, read in place from the tensor. Files are read back with `safetensors.safe_open`,
or with `read_into`, which fills existing tensors in place (the same saving on load).

Every file records a CRC-32 of each tensor's bytes in its metadata (`CHECKSUMS`), taken
from the tensor's own memory; `read_into` and `verify` check them, so flipped bytes in the
data are refused instead of loading as garbage weights. The metadata itself (the
trainer's counters, the optimizer's scalars, that table) has a CRC-32 too (`META_CHECKSUM`),
and the mark `FORMAT` says a file has one, so deleting the checksum is refused as well.
Files without them (written before, or by another writer) are read unchecked.
"""

from __future__ import annotations

import ctypes
import io
import json
import struct
import zlib
from typing import BinaryIO

import torch
from torch import Tensor

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
CHECKSUMS = "crc32"  # metadata key: JSON {tensor name: zlib.crc32 of its bytes}
# The metadata's own checksum, and the mark of a file that has one: a file that carries
# FORMAT and lacks META_CHECKSUM was changed after it was written.
FORMAT = "lstmlm_format"
FORMAT_VERSION = "2"  # 2: the metadata is checksummed too
META_CHECKSUM = "meta_crc32"


class ChecksumError(ValueError):
    """A tensor's bytes do not match the checksum recorded when the file was written."""


def write_safetensors(f: BinaryIO, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (CPU, contiguous) and string `metadata` to the open binary file `f`,
    with each tensor's CRC-32 added to the metadata under `CHECKSUMS`."""
    header: dict[str, object] = {}
    sums: dict[str, int] = {}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be saved")
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{name}: only contiguous CPU tensors can be saved")
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        sums[name] = crc32(t)
        offset += n
    meta = {**metadata, CHECKSUMS: json.dumps(sums), FORMAT: FORMAT_VERSION}
    meta[META_CHECKSUM] = str(metadata_crc32(meta))
    header = {"__metadata__": meta, **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for t in tensors.values():
        if t.numel():
            f.write(_bytes(t))


def _bytes(t: Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, in place (no copy)."""
    n = t.numel() * t.element_size()
    return memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr()))


def crc32(t: Tensor) -> int:
    """zlib.crc32 of a contiguous CPU tensor's bytes, read from its own memory."""
    return zlib.crc32(_bytes(t)) if t.numel() else 0


def checksums(metadata: dict[str, str]) -> dict[str, int] | None:
    """The per-tensor CRC-32s recorded in a file's metadata; None if it has none (a file
    written before they were added, or by another writer). ChecksumError if unreadable."""
    text = metadata.get(CHECKSUMS)
    if text is None:
        return None
    try:
        sums = json.loads(text)
    except ValueError:
        sums = None
    if not isinstance(sums, dict) or not all(type(v) is int for v in sums.values()):
        raise ChecksumError("its table of checksums is unreadable")
    return sums


def metadata_crc32(metadata: dict[str, str]) -> int:
    """zlib.crc32 of the metadata's entries (all but META_CHECKSUM), in a fixed order."""
    items = sorted((k, v) for k, v in metadata.items() if k != META_CHECKSUM)
    return zlib.crc32(json.dumps(items, ensure_ascii=True).encode("ascii"))


def verify_metadata(metadata: dict[str, str]) -> bool:
    """ChecksumError unless the metadata (trainer state, optimizer scalars, the tensor
    checksums) is as written; False for a file from before metadata checksums (no FORMAT
    mark: nothing to check), True when checked."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ChecksumError("its metadata is not a table of strings")
    if FORMAT not in metadata:
        return False
    recorded = metadata.get(META_CHECKSUM)
    if recorded is None:
        raise ChecksumError("its metadata has no checksum")
    if recorded != str(metadata_crc32(metadata)):
        raise ChecksumError("its metadata (trainer or optimizer state) fails its checksum")
    return True


def verify(name: str, t: Tensor, sums: dict[str, int] | None) -> None:
    """ChecksumError unless tensor `name` (as read, contiguous on CPU) has its recorded
    CRC-32; nothing to check when `sums` is None."""
    if sums is None:
        return
    if name not in sums:
        raise ChecksumError(f"tensor {name} has no checksum")
    if crc32(t) != sums[name]:
        raise ChecksumError(f"tensor {name} fails its checksum")


def read_header(f: BinaryIO) -> tuple[dict[str, dict], dict[str, str], int]:
    """The tensor entries {name: {dtype, shape, data_offsets}}, the metadata, and the byte
    offset where the data starts, from a safetensors file open at its start."""
    (size,) = struct.unpack("<Q", f.read(8))
    if size > 100 * 2**20:
        raise ValueError(f"header of {size} bytes is not plausible")
    try:
        header = json.loads(f.read(size))
    except RecursionError:  # nested lists 200,000 deep: not a header
        raise ValueError("the header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ValueError(f"the header is a JSON {type(header).__name__}, not a table")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError("the header's metadata is not a table")
    if not all(isinstance(e, dict) for e in header.values()):
        raise ValueError("the header's tensor entries are not tables")
    return header, metadata, 8 + size


def read_into(
    f: io.BufferedReader | io.BytesIO,
    targets: dict[str, Tensor],
    parsed: tuple[dict[str, dict], dict[str, str], int] | None = None,
) -> None:
    """Fill each tensor of `targets` (CPU, contiguous) in place from the tensor of that name.

    The bytes go from the file straight into the tensors' memory: no mapped file and no
    second copy of the weights, so loading a checkpoint into a live model does not raise
    the process's peak memory. Dtype, shape and byte range are checked first, the recorded
    checksum (if any) after: ChecksumError for damaged bytes, which are then in the tensor.
    `parsed`: the file's `read_header` result when the caller has read it already.
    """
    header, metadata, start = parsed if parsed is not None else read_header(f)
    verify_metadata(metadata)
    sums = checksums(metadata)
    for name, t in targets.items():
        entry = header.get(name)
        if entry is None:
            raise ValueError(f"{name}: not in the file")
        if entry["dtype"] != _DTYPES.get(t.dtype) or list(entry["shape"]) != list(t.shape):
            raise ValueError(
                f"{name}: file has {entry['dtype']} {entry['shape']}, expected "
                f"{_DTYPES.get(t.dtype)} {list(t.shape)}"
            )
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{name}: only contiguous CPU tensors can be read into")
        begin, end = entry["data_offsets"]
        n = t.numel() * t.element_size()
        if end - begin != n:
            raise ValueError(f"{name}: {end - begin} bytes in the file for {n} in the tensor")
        f.seek(start + begin)
        if n and f.readinto(_bytes(t)) != n:
            raise ValueError(f"{name}: the file ends inside its data")
        # Written behind torch's back: bump the version counter as an in-place op would, so
        # copies kept per version (nn/manual/shadows.py) and autograd see the change.
        torch.autograd.graph.increment_version(t)
        verify(name, t, sums)
