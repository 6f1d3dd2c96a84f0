"""The token cache: a second load reads and tokenizes nothing; a changed text, level or
vocabulary makes a new entry; a damaged entry is found, reported and built again."""

import dataclasses
import logging
import os

import pytest
import torch

from lstmlm.config import DataConfig
from lstmlm.data import cache, corpora, readers, stream
from lstmlm.data.dataset import load_dataset
from lstmlm.data.subword import SubwordVocab
from lstmlm.data.vocab import Vocab

TEXT = "".join(f"Line {i} of the text, word{i % 7} and More\n" for i in range(60))


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture
def cache_dir():
    return cache.root()  # conftest points it at a fresh folder per test


def forbid_reading(monkeypatch):
    """Any read of a text or its tokenizing from here on fails the test."""

    def refuse(*a, **kw):
        raise AssertionError("the text was read or tokenized again")

    for module, name in [
        (readers, "_file_pieces"),
        (readers, "read_epub"),
        (cache, "_hash"),
        (stream, "encode_new"),
        (stream, "encode_splits"),
        (stream, "build_vocab"),
    ]:
        monkeypatch.setattr(module, name, refuse)


def in_memory(d):
    """`d` with its ids copied out of the map (a test that damages the file in place
    would change them under a live map: never do that to a cache in use)."""
    return dataclasses.replace(d, train=d.train.clone(), valid=d.valid.clone(), test=d.test.clone())


def same_data(a, b):
    assert a.vocab.itos == b.vocab.itos and a.level == b.level
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert a.stats == b.stats and a.text_sha256 == b.text_sha256
    assert a.unk_counts == b.unk_counts


@pytest.mark.parametrize("level", ["word", "char", "bpe"])
def test_a_second_load_reads_and_tokenizes_nothing(text_file, monkeypatch, level):
    cfg = DataConfig(train=str(text_file), level=level, vocab_size=300 if level == "bpe" else None)
    first = load_dataset(cfg)
    assert first.train.dtype == torch.uint16  # a view of the mapped token file
    forbid_reading(monkeypatch)
    same_data(load_dataset(cfg), first)
    # a run that brings its vocabulary, read back from its run folder (--resume, evaluate)
    if isinstance(first.vocab, SubwordVocab):
        saved = SubwordVocab.from_str(first.vocab.to_str(), level)
    else:
        saved = Vocab.from_json(first.vocab.to_json())
    same_data(load_dataset(cfg, vocab=saved), first)


def test_a_named_corpus_and_a_folder_are_cached_too(tmp_path, monkeypatch):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    (folder / "b.txt").write_text(TEXT.upper(), encoding="utf-8")
    cfg = DataConfig(train=str(folder))
    first = load_dataset(cfg)
    forbid_reading(monkeypatch)
    same_data(load_dataset(cfg), first)


@pytest.mark.parametrize(
    "change",
    [
        {"level": "char"},
        {"lowercase": True},
        {"min_freq": 2},
        {"max_vocab": 10},
    ],
)
def test_an_option_that_changes_the_ids_makes_a_new_entry(text_file, cache_dir, change):
    cfg = DataConfig(train=str(text_file))
    base = load_dataset(cfg)
    other = load_dataset(DataConfig(**{**cfg.__dict__, **change}))
    assert other.vocab.itos != base.vocab.itos
    assert len(entries(cache_dir, "ids")) == len(entries(cache_dir, "vocab")) == 2
    again = load_dataset(cfg)  # and the first entry is still there, unchanged
    same_data(again, base)


def test_a_changed_text_is_tokenized_again(text_file):
    cfg = DataConfig(train=str(text_file))
    before = load_dataset(cfg)
    st = text_file.stat()
    # Same size, same mtime: only ctime (which nobody can set back) tells the memo.
    text_file.write_text(TEXT.replace("Line 3 ", "LINE 3 "), encoding="utf-8")
    os.utime(text_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = load_dataset(cfg)
    assert after.text_sha256 != before.text_sha256
    assert "LINE" in after.vocab.stoi and "LINE" not in before.vocab.stoi


def test_a_changed_vocabulary_gets_its_own_ids(text_file):
    cfg = DataConfig(train=str(text_file))
    base = load_dataset(cfg)
    small = Vocab(base.vocab.itos[:5])  # another run's vocabulary: most words are <unk>
    data = load_dataset(cfg, vocab=small)
    assert data.unk_counts["train"] > 0 and base.unk_counts["train"] == 0
    assert max(data.train.tolist()) < 5
    same_data(load_dataset(cfg), base)  # a new run still gets the vocabulary it would build


def entries(cache_dir, kind):
    return sorted((cache_dir / kind).glob("*.tokens" if kind == "ids" else "*.json"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: bytes([b[0] ^ 1]) + b[1:],  # one id changed
        lambda b: b"",
    ],
    ids=["truncated", "flipped", "empty"],
)
def test_a_damaged_token_file_is_rebuilt_never_used(text_file, cache_dir, caplog, damage):
    cfg = DataConfig(train=str(text_file))
    good = in_memory(load_dataset(cfg))
    [path] = entries(cache_dir, "ids")
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="lstmlm"):
        again = load_dataset(cfg)
    same_data(again, good)
    assert "damaged" in caplog.text and path.name in caplog.text
    assert load_dataset(cfg).train.tolist() == good.train.tolist()  # rebuilt, whole


def test_a_damaged_vocabulary_entry_is_rebuilt(text_file, cache_dir, caplog):
    cfg = DataConfig(train=str(text_file))
    good = load_dataset(cfg)
    [path] = entries(cache_dir, "vocab")
    path.write_text(path.read_text().replace("word1", "wordX"))  # its checksum no longer holds
    with caplog.at_level(logging.WARNING, logger="lstmlm"):
        same_data(load_dataset(cfg), good)
    assert "damaged" in caplog.text


def test_cache_off_writes_nothing(text_file, cache_dir, monkeypatch):
    monkeypatch.setenv(cache.ENV, "off")
    cfg = DataConfig(train=str(text_file))
    data = load_dataset(cfg)
    assert data.train.dtype == torch.uint16 and data.tokens is not None  # still mapped
    assert not any(cache_dir.iterdir())
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("LSTMLM_CACHE", str(cache_dir.parent / "cc"))
    same_data(load_dataset(cfg), data)  # the same dataset, with or without the cache


def test_an_unwritable_cache_is_a_warning(text_file, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv(cache.ENV, str(blocker / "sub"))
    with caplog.at_level(logging.WARNING, logger="lstmlm"):
        data = load_dataset(DataConfig(train=str(text_file)))
    assert data.train.numel() > 0 and "cannot be used" in caplog.text


def test_where_the_cache_lives(monkeypatch, tmp_path):
    for var in (cache.ENV, "LSTMLM_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.root() == tmp_path / ".cache" / "lstmlm" / "tokens"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache.root() == tmp_path / ".cache" / "lstmlm" / "tokens"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "xdg" / "lstmlm" / "tokens"
    monkeypatch.setenv("LSTMLM_CACHE", str(tmp_path / "lc"))
    assert cache.root() == tmp_path / "lc" / "tokens"
    monkeypatch.setenv(cache.ENV, str(tmp_path / "tc"))
    assert cache.root() == tmp_path / "tc"
    for off in ("off", "0", "OFF"):
        monkeypatch.setenv(cache.ENV, off)
        assert cache.root() is None


def test_a_file_changed_while_it_is_read_is_refused(text_file, monkeypatch):
    real = readers._file_pieces

    def growing(path, digest=None):  # the text changes between hashing and tokenizing
        yield from real(path, digest)
        if digest is not None:
            digest.update(b"more")

    monkeypatch.setattr(readers, "_file_pieces", growing)
    with pytest.raises(ValueError, match="changed while it was read"):
        load_dataset(DataConfig(train=str(text_file)))


def test_stale_temporary_files_are_removed(cache_dir):
    store = cache.Store.open()
    old, new = store.ids / ".x.tokens.abc.tmp", store.ids / ".y.tokens.def.tmp"
    old.write_text("")
    new.write_text("")
    os.utime(old, (0, 0))
    cache.Store.open()
    assert not old.exists() and new.exists()  # a live writer's file stays


def test_a_new_vocab_size_trains_a_new_tokenizer(text_file, cache_dir):
    cfg = DataConfig(train=str(text_file), level="bpe", vocab_size=300)
    small = load_dataset(cfg)
    larger = load_dataset(DataConfig(**{**cfg.__dict__, "vocab_size": 320}))
    assert len(small.vocab) <= 300 < len(larger.vocab) <= 320
    assert len(entries(cache_dir, "vocab")) == len(entries(cache_dir, "ids")) == 2


def test_an_archive_corpus_is_checked_through_the_memo(tmp_path, monkeypatch):
    from helpers import archive_spec, sha, write_corpus_files

    monkeypatch.setitem(
        corpora.CORPORA, "zipped", archive_spec("zipped", "char", b"zip", member="z", cut=(1, 1, 1))
    )
    texts = {s: f"the {s} text\n".encode() for s in ("train", "valid", "test")}
    write_corpus_files(tmp_path, {f"zipped/{s}.txt": t for s, t in texts.items()})
    sums = [f"{sha(b'zip')}  zipped.zip"] + [f"{sha(t)}  {s}.txt" for s, t in texts.items()]
    (tmp_path / "zipped" / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    cfg = DataConfig(corpus="zipped", data_dir=str(tmp_path))
    first = in_memory(load_dataset(cfg))
    assert first.level == "char" and "".join(first.vocab.decode(first.valid.tolist())) != ""
    with monkeypatch.context() as m:
        forbid_reading(m)
        same_data(load_dataset(cfg), first)  # verified by the memo, not by a read
    (tmp_path / "zipped" / "valid.txt").write_bytes(b"the VALID text\n")
    with pytest.raises(ValueError, match=r"valid.txt: sha256 .* corrupted or modified"):
        load_dataset(cfg)
