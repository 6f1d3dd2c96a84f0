"""Write the safetensors format straight from tensor memory, one tensor at a time.

`safetensors.torch.save` builds the whole file as one `bytes` object first (and copies
every tensor into bytes on the way), so saving a checkpoint briefly needs about twice its
size in extra memory: +100 MB at the medium size, the peak of a whole training run. This
writer streams: an 8-byte little-endian header length, the JSON header (dtype, shape and
byte range of each tensor, plus `__metadata__`), then each tensor's bytes in header
order, read in place from the tensor. Files are read back with `safetensors.safe_open`,
or with `read_into`, which fills existing tensors in place (the same saving on load).
"""

from __future__ import annotations

import ctypes
import json
import struct
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


def write_safetensors(f: BinaryIO, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (CPU, contiguous) and string `metadata` to the open binary file `f`."""
    header: dict[str, object] = {"__metadata__": metadata}
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
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for t in tensors.values():
        n = t.numel() * t.element_size()
        if n:
            f.write(memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())))


def read_header(f: BinaryIO) -> tuple[dict[str, dict], dict[str, str], int]:
    """The tensor entries {name: {dtype, shape, data_offsets}}, the metadata, and the byte
    offset where the data starts, from a safetensors file open at its start."""
    (size,) = struct.unpack("<Q", f.read(8))
    if size > 100 * 2**20:
        raise ValueError(f"header of {size} bytes is not plausible")
    header = json.loads(f.read(size))
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + size


def read_into(f: BinaryIO, targets: dict[str, Tensor]) -> None:
    """Fill each tensor of `targets` (CPU, contiguous) in place from the tensor of that name.

    The bytes go from the file straight into the tensors' memory: no mapped file and no
    second copy of the weights, so loading a checkpoint into a live model does not raise
    the process's peak memory. Dtype, shape and byte range are checked first.
    """
    header, _, start = read_header(f)
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
        if n and f.readinto(memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr()))) != n:
            raise ValueError(f"{name}: the file ends inside its data")
