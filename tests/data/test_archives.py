"""Archive corpora: the byte cut of enwik8/text8, extraction into split files with their
SHA256SUMS, and what a broken archive or SHA256SUMS file gives."""

import hashlib
import io

import pytest

from helpers import sha, write_zip
from lstmlm.data.archives import SUMS, CorpusArchive, Cutter, extract_splits, read_sums

# 100 bytes of UTF-8 in which the byte cuts at 90 and 95 both fall inside a character:
# "é" is 2 bytes, "€" 3; bytes 89-90 are one "é", bytes 93-95 one "€".
MULTIBYTE = b"a" * 89 + "é".encode() + b"bc" + "€".encode() + b"d" * 4
assert len(MULTIBYTE) == 100 and MULTIBYTE[90] == 0xA9 and MULTIBYTE[94:96] == b"\x82\xac"


def cut(data: bytes, sizes: tuple[int, ...], chunk: int) -> list[bytes]:
    outs = tuple(io.BytesIO() for _ in sizes)
    cutter = Cutter(outs, sizes)
    for i in range(0, len(data), chunk):
        cutter.write(data[i : i + chunk])
    assert cutter.done == len(data)
    assert cutter.whole.hexdigest() == sha(data)
    parts = [o.getvalue() for o in outs]
    assert [h.hexdigest() for h in cutter.hashes] == [sha(p) for p in parts]
    return parts


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_ascii_is_cut_at_90_5_5_bytes(chunk):
    data = bytes(range(97, 123)) * 3 + b" " * 22  # 100 bytes of a-z and space, text8-like
    assert cut(data, (90, 5, 5), chunk) == [data[:90], data[90:95], data[95:]]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 91, 1000])
def test_a_cut_inside_a_character_moves_to_the_next_character(chunk):
    parts = cut(MULTIBYTE, (90, 5, 5), chunk)
    assert parts == [MULTIBYTE[:91], MULTIBYTE[91:96], MULTIBYTE[96:]]
    assert b"".join(parts) == MULTIBYTE
    assert [p.decode("utf-8") for p in parts] == ["a" * 89 + "é", "bc€", "dddd"]


def test_invalid_continuation_runs_stay_whole():
    """Bytes that are not UTF-8 are kept, never dropped: the cut just moves past them (here
    past the second cut too, which leaves the middle part empty)."""
    data = b"x" * 9 + b"\x80\x80\x80\x80" + b"yz"
    assert cut(data, (10, 3, 2), 4) == [data[:13], b"", b"yz"]


def archive(zip_bytes: bytes, **kw) -> CorpusArchive:
    return CorpusArchive("t.zip", sha(zip_bytes), len(zip_bytes), (), **kw)


def test_extract_members_and_their_sums(tmp_path):
    members = {f"t/wiki.{s}.tokens": f" {s} text \n".encode() for s in ("train", "valid", "test")}
    z = write_zip(tmp_path / "t.zip", members)
    arc = archive(z, members={s: f"t/wiki.{s}.tokens" for s in ("train", "valid", "test")})
    (tmp_path / "out").mkdir()
    seen = []
    sums = extract_splits(tmp_path / "t.zip", arc, tmp_path / "out", lambda d, t: seen.append(d))
    for split in ("train", "valid", "test"):
        data = (tmp_path / "out" / f"{split}.txt").read_bytes()
        assert data == f" {split} text \n".encode() and sums[split] == sha(data)
    assert seen[-1] == sum(len(v) for v in members.values())
    lines = (tmp_path / "out" / SUMS).read_text().splitlines()
    assert lines[0] == f"{sha(z)}  t.zip"
    assert lines[1:] == [f"{sums[s]}  {s}.txt" for s in ("train", "valid", "test")]
    assert read_sums(tmp_path / "out" / SUMS) == {"t.zip": sha(z)} | {
        f"{s}.txt": sums[s] for s in sums
    }


def test_extract_cut_checks_size_and_published_sum(tmp_path):
    z = write_zip(tmp_path / "t.zip", {"t": MULTIBYTE})
    good = archive(z, member="t", cut=(90, 5, 5), member_sha256=sha(MULTIBYTE))
    (tmp_path / "a").mkdir()
    extract_splits(tmp_path / "t.zip", good, tmp_path / "a", chunk=7)
    assert (tmp_path / "a" / "valid.txt").read_bytes() == "bc€".encode()
    wrong_sum = archive(z, member="t", cut=(90, 5, 5), member_sha256=sha(b"other"))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="does not match its published sha256"):
        extract_splits(tmp_path / "t.zip", wrong_sum, tmp_path / "b")
    wrong_size = archive(z, member="t", cut=(90, 5, 6))
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="has 100 bytes, expected 101"):
        extract_splits(tmp_path / "t.zip", wrong_size, tmp_path / "c")


def test_a_missing_member_or_a_broken_zip_is_named(tmp_path):
    z = write_zip(tmp_path / "t.zip", {"t/a": b"x"})
    arc = archive(z, members={"train": "t/a", "valid": "t/b", "test": "t/a"})
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"t.zip: the archive has no member 't/b'"):
        extract_splits(tmp_path / "t.zip", arc, tmp_path / "out")
    whole = write_zip(tmp_path / "big.zip", {"t": hashlib.sha256(b"x").digest() * 1000})
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) // 2])
    broken = archive(whole[: len(whole) // 2], member="t", cut=(10, 10, 12))
    with pytest.raises(ValueError, match="not a readable zip archive"):
        extract_splits(tmp_path / "cut.zip", broken, tmp_path / "out")


@pytest.mark.parametrize(
    "content",
    [b"not sums\n", b"abc  train.txt\n", b"\xff\xfe", b"0" * 64 + b" x\n", b"0" * 70000],
)
def test_read_sums_refuses_what_is_not_a_sums_file(tmp_path, content):
    (tmp_path / SUMS).write_bytes(content)
    with pytest.raises(ValueError, match=f"{SUMS}: not a SHA256SUMS file"):
        read_sums(tmp_path / SUMS)
    with pytest.raises(ValueError, match="cannot read file"):
        read_sums(tmp_path / "missing")


def test_archive_spec_must_be_one_form():
    with pytest.raises(ValueError, match="either members"):
        CorpusArchive("x.zip", "0" * 64, 1, (), members={"train": "a"}, member="a")
    with pytest.raises(ValueError, match="must name train, valid and test"):
        CorpusArchive("x.zip", "0" * 64, 1, (), members={"train": "a"})
    with pytest.raises(ValueError, match="3 positive byte counts"):
        CorpusArchive("x.zip", "0" * 64, 1, (), member="a", cut=(1, 0, 1))
