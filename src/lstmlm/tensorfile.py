"""Write the safetensors format straight from tensor memory, one tensor at a time.

`safetensors.torch.save` builds the whole file as one `bytes` object first (and copies
every tensor into bytes on the way), so saving a checkpoint briefly needs about twice its
size in extra memory: +100 MB at the medium size, the peak of a whole training run. This
writer streams: an 8-byte little-endian header length, the JSON header (dtype, shape and
byte range of each tensor, plus `__metadata__`), then each tensor's bytes in header
order, read in place from the tensor. Files are read back with `safetensors.safe_open`.
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
