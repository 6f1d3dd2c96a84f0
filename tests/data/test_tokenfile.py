import numpy as np
import pytest
import torch

from lstmlm.data.tokenfile import TRAILER, BadTokenFile, TokenWriter, dtype_for, open_tokens

IDS = {"train": np.arange(1000) % 700, "valid": np.array([5, 6, 7]), "test": np.array([1, 2])}


def write(path, vocab_size=700, meta=None, ids=IDS):
    with path.open("wb") as f:
        w = TokenWriter(f, vocab_size)
        for split, a in ids.items():
            w.add(split, a[: len(a) // 2])  # a split in two pieces
            w.add(split, a[len(a) // 2 :])
        w.close(meta or {"text_sha256": "ab"})
    return path


@pytest.mark.parametrize("vocab_size, dtype", [(700, torch.uint16), (70_000, torch.uint32)])
def test_ids_round_trip_as_views_of_the_map(tmp_path, vocab_size, dtype):
    tf = open_tokens(write(tmp_path / "t.tokens", vocab_size, {"x": [1, 2]}))
    assert tf.meta == {"x": [1, 2]}
    for split, a in IDS.items():
        t = tf.tensor(split)
        assert t.dtype == dtype and t.tolist() == a.tolist()
    raw = (tmp_path / "t.tokens").read_bytes()  # the ids from offset 0: a page-aligned map
    item = 2 if dtype == torch.uint16 else 4
    assert np.frombuffer(raw[: 1000 * item], f"<u{item}").tolist() == IDS["train"].tolist()
    tf.release()  # drops the mapped pages: the ids read the same afterwards
    assert tf.tensor("train")[:5].tolist() == [0, 1, 2, 3, 4]


def test_id_type_follows_the_vocabulary_size():
    assert dtype_for(65_536) == "uint16" and dtype_for(65_537) == "uint32"


def test_an_id_outside_the_vocabulary_is_refused(tmp_path):
    with (tmp_path / "t").open("wb") as f, pytest.raises(ValueError, match="outside"):
        TokenWriter(f, 10).add("train", np.array([3, 10]))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # trailer cut
        lambda b: b[:100],  # most of it lost
        lambda b: b[:0],
        lambda b: b"\0" + b,  # padded in front: the size no longer matches
        lambda b: bytes([b[0] ^ 1]) + b[1:],  # a train id flipped
        lambda b: b[:2001] + bytes([b[2001] ^ 4]) + b[2002:],  # a valid id flipped
        lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:],  # the header changed
        lambda b: b[:-8] + b"LSTMTOK0",  # wrong magic
    ],
)
def test_a_damaged_file_is_refused_never_read(tmp_path, damage):
    good = write(tmp_path / "t.tokens").read_bytes()
    bad = tmp_path / "bad.tokens"
    bad.write_bytes(damage(good))
    with pytest.raises(BadTokenFile):
        open_tokens(bad)


def test_header_length_past_the_file_is_refused(tmp_path):
    good = write(tmp_path / "t.tokens").read_bytes()
    n, crc, magic = TRAILER.unpack(good[-TRAILER.size :])
    (tmp_path / "bad").write_bytes(good[: -TRAILER.size] + TRAILER.pack(len(good), crc, magic))
    with pytest.raises(BadTokenFile, match="not a whole"):
        open_tokens(tmp_path / "bad")


def test_missing_file_is_not_a_damaged_one(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_tokens(tmp_path / "none.tokens")


def _rss_file_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="no madvise")
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="Linux only")
def test_release_hands_the_read_pages_back(tmp_path):
    """Reading a mapped split makes its pages resident; `release` gives them back, so a
    pass over a corpus bigger than memory does not keep it resident."""
    n = 16 << 20  # 32 MB of uint16 ids
    ids = {"train": np.arange(n) % 60_000, "valid": np.array([1, 2]), "test": np.array([3, 4])}
    tf = open_tokens(write(tmp_path / "big.tokens", 60_000, ids=ids))
    before = _rss_file_mb()
    assert int(tf.tensor("train").numpy().sum(dtype=np.int64)) == int(ids["train"].sum())
    touched = _rss_file_mb()
    tf.release()
    released = _rss_file_mb()
    assert touched - before > 24  # the pages read are resident...
    assert touched - released > 24  # ...until released
    assert tf.tensor("train")[-3:].tolist() == ids["train"][-3:].tolist()  # read again
