import io
import json
import tracemalloc
import zlib

import pytest
import safetensors
import safetensors.torch
import torch

from lstmlm.storage.tensorfile import (
    CHECKSUMS,
    ChecksumError,
    checksums,
    read_header,
    read_into,
    verify,
    write_safetensors,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(7, 5, generator=g),
        "bf": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "ids": torch.arange(11, dtype=torch.int64),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "bytes": torch.arange(5, dtype=torch.uint8),
        "view": torch.arange(20.0).reshape(4, 5)[1:3].contiguous(),
    }


def test_file_reads_back_with_safetensors(tmp_path):
    tensors = _tensors()
    path = tmp_path / "x.safetensors"
    with open(path, "wb") as f:
        write_safetensors(f, tensors, {"k": json.dumps({"a": 1})})
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["k"]) == {"a": 1}
        assert set(f.keys()) == set(tensors)
        for k, t in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == t.dtype and got.shape == t.shape
            assert torch.equal(got, t)


def test_same_tensors_as_the_library_writer():
    tensors = _tensors()
    buf = io.BytesIO()
    write_safetensors(buf, tensors, {"m": "x"})
    ours = safetensors.torch.load(buf.getvalue())
    theirs = safetensors.torch.load(safetensors.torch.save(tensors, metadata={"m": "x"}))
    assert set(ours) == set(theirs)
    for k in ours:
        assert torch.equal(ours[k], theirs[k])


def test_streams_without_a_copy_of_the_data(tmp_path):
    big = {"a": torch.zeros(4_000_000), "b": torch.ones(2_000_000)}  # 24 MB
    tracemalloc.start()
    try:
        with open(tmp_path / "big.safetensors", "wb") as f:
            write_safetensors(f, big, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # Python-side allocations only: no bytes copy of the 24 MB
    assert (tmp_path / "big.safetensors").stat().st_size > 24_000_000


def test_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="contiguous"):
        write_safetensors(io.BytesIO(), {"t": torch.zeros(4, 4).t()}, {})
    with pytest.raises(ValueError, match="dtype"):
        write_safetensors(io.BytesIO(), {"c": torch.zeros(2, dtype=torch.complex64)}, {})


def test_read_into_fills_tensors_in_place_from_a_library_written_file(tmp_path):
    tensors = _tensors()
    path = tmp_path / "lib.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    targets = {k: torch.empty_like(t) for k, t in tensors.items()}
    ptrs = {k: t.data_ptr() for k, t in targets.items()}
    with open(path, "rb") as f:
        read_into(f, targets)
    for k, t in tensors.items():
        assert torch.equal(targets[k], t)
        assert targets[k].data_ptr() == ptrs[k]  # the same memory, filled


def test_read_into_refuses_other_dtypes_shapes_names_and_short_files(tmp_path):
    path = tmp_path / "x.safetensors"
    with open(path, "wb") as f:
        write_safetensors(f, {"w": torch.ones(3, 4)}, {})
    for targets, msg in (
        ({"w": torch.empty(4, 3)}, "expected F32"),
        ({"w": torch.empty(3, 4, dtype=torch.float64)}, "expected F64"),
        ({"v": torch.empty(3, 4)}, "not in the file"),
        ({"w": torch.empty(4, 3).t()}, "contiguous"),
    ):
        with open(path, "rb") as f, pytest.raises(ValueError, match=msg):
            read_into(f, targets)
    short = tmp_path / "short.safetensors"
    short.write_bytes(path.read_bytes()[:-8])
    with open(short, "rb") as f, pytest.raises(ValueError, match="ends inside"):
        read_into(f, {"w": torch.empty(3, 4)})


def _flip_byte_of(path, name: str, at: int = 0) -> None:
    """XOR one byte of tensor `name`'s data in the file at `path`."""
    with open(path, "rb") as f:
        header, _, start = read_header(f)
    data = bytearray(path.read_bytes())
    data[start + header[name]["data_offsets"][0] + at] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_tensor_has_the_crc32_of_its_bytes_in_the_metadata(tmp_path):
    tensors = _tensors()
    path = tmp_path / "x.safetensors"
    with open(path, "wb") as f:
        write_safetensors(f, tensors, {"k": "v"})
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        assert metadata["k"] == "v"  # the caller's metadata is kept
        sums = json.loads(metadata[CHECKSUMS])
        for k, t in tensors.items():
            assert sums[k] == zlib.crc32(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            verify(k, f.get_tensor(k), checksums(metadata))  # intact: no error


def test_read_into_refuses_damaged_bytes(tmp_path):
    path = tmp_path / "x.safetensors"
    g = torch.Generator().manual_seed(1)
    with open(path, "wb") as f:
        write_safetensors(f, {"a": torch.randn(8, generator=g), "w": torch.randn(3, 4)}, {})
    _flip_byte_of(path, "w", at=5)
    targets = {"a": torch.empty(8), "w": torch.empty(3, 4)}
    with open(path, "rb") as f, pytest.raises(ChecksumError, match="^tensor w fails its checksum$"):
        read_into(f, targets)
    with open(path, "rb") as f:
        read_into(f, {"a": targets["a"]})  # the intact tensor still reads
    assert torch.equal(targets["a"], torch.randn(8, generator=torch.Generator().manual_seed(1)))


def test_files_without_checksums_are_read_unchecked_and_bad_tables_refused(tmp_path):
    tensors = {"w": torch.arange(12.0).reshape(3, 4)}
    path = tmp_path / "lib.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"k": "v"})  # no checksums
    assert checksums({"k": "v"}) is None
    _flip_byte_of(path, "w")
    target = torch.empty(3, 4)
    with open(path, "rb") as f:
        read_into(f, {"w": target})  # nothing to check against: read as it is
    assert not torch.equal(target, tensors["w"])
    for table in ("{not json", '{"w": "123"}', "[1, 2]"):
        with pytest.raises(ChecksumError, match="unreadable"):
            checksums({CHECKSUMS: table})
    with pytest.raises(ChecksumError, match="tensor v has no checksum"):
        verify("v", torch.ones(2), {"w": 1})
