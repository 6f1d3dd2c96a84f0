import hashlib
import os
from pathlib import Path

import pytest

from helpers import CONTENT, archive_spec, isolate_corpora, sha, write_corpus_files
from lstmlm.data import corpora
from lstmlm.data.corpora import CORPORA, CorpusNotFound, CorpusSpec, find_corpus, search_path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data dirs leak in: empty cwd, no env overrides, no repo-side shared data."""
    isolate_corpora(tmp_path, monkeypatch)


# --- registry -------------------------------------------------------------------------------


def test_registry_names_and_levels():
    assert {"ptb", "ptb-char", "wikitext-2", "tinyshakespeare"} <= set(CORPORA)
    assert CORPORA["ptb"].level == "word"
    assert CORPORA["ptb-char"].level == "symbols"
    assert CORPORA["tinyshakespeare"].level == "char"
    assert set(CORPORA["tinyshakespeare"].files) == {"train"}
    for name in ("ptb", "ptb-char", "wikitext-2"):
        assert set(CORPORA[name].files) == {"train", "valid", "test"}
        for f in CORPORA[name].files.values():
            assert f.path.startswith(f"{name}/")
            assert all(u.startswith("https://raw.githubusercontent.com/") for u in f.urls)
            assert len(f.sha256) == 64


def test_archive_corpora():
    """The four archive corpora: pinned archives, their splits, the level a run gets."""
    levels = {"wikitext-103": "word", "wikitext-103-raw": "bpe", "enwik8": "char", "text8": "char"}
    sizes = {
        "wikitext-103": 190_229_076,
        "wikitext-103-raw": 191_984_949,
        "enwik8": 36_445_475,
        "text8": 31_344_016,
    }
    for name, level in levels.items():
        spec = CORPORA[name]
        assert spec.level == level and spec.files == {} and spec.archive is not None
        assert spec.archive.size == sizes[name] and len(spec.archive.sha256) == 64
        assert len(spec.archive.urls) == 2
        assert all(u.endswith(f"/{spec.archive.file}") for u in spec.archive.urls)
        assert spec.paths == {s: f"{name}/{s}.txt" for s in ("train", "valid", "test")}
        assert spec.sums_path == f"{name}/SHA256SUMS"
    for name in ("enwik8", "text8"):
        arc = CORPORA[name].archive
        assert arc.member == name and arc.cut == (90_000_000, 5_000_000, 5_000_000)
        assert len(arc.member_sha256) == 64
    wt = CORPORA["wikitext-103"].archive
    assert dict(wt.members) == {
        s: f"wikitext-103/wiki.{s}.tokens" for s in ("train", "valid", "test")
    }
    assert CORPORA["wikitext-103-raw"].archive.members["test"] == "wikitext-103-raw/wiki.test.raw"
    with pytest.raises(ValueError, match="either files or an archive"):
        CorpusSpec("x", "word")


def write_archive_corpus(root: Path, archive_sha: str) -> dict[str, bytes]:
    """An extracted archive corpus 'zipped' in `root`, its SHA256SUMS naming `archive_sha`."""
    texts = {s: f" {s} \n".encode() for s in ("train", "valid", "test")}
    write_corpus_files(root, {f"zipped/{s}.txt": t for s, t in texts.items()})
    lines = [f"{archive_sha}  zipped.zip"] + [f"{sha(t)}  {s}.txt" for s, t in texts.items()]
    (root / "zipped" / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return texts


def test_find_checks_an_archive_corpus_against_its_sums(tmp_path, monkeypatch):
    spec = archive_spec("zipped", "char", b"the archive", member="z", cut=(1, 1, 1))
    monkeypatch.setitem(CORPORA, "zipped", spec)
    d = tmp_path / "d"
    texts = write_archive_corpus(d, sha(b"the archive"))
    paths = find_corpus("zipped", d)
    assert {s: p.read_bytes() for s, p in paths.items()} == texts
    (d / "zipped" / "valid.txt").write_bytes(b" other \n")
    with pytest.raises(ValueError, match=r"valid.txt: sha256 .* corrupted or modified"):
        find_corpus("zipped", d)
    write_archive_corpus(d, sha(b"another archive"))
    with pytest.raises(ValueError, match=r"SHA256SUMS: not made from zipped.zip"):
        find_corpus("zipped", d)
    (d / "zipped" / "SHA256SUMS").unlink()  # without its sums the folder is incomplete
    with pytest.raises(CorpusNotFound, match="lstmlm download zipped"):
        find_corpus("zipped", d)


def test_specs_are_frozen_and_hashable():
    spec = CORPORA["ptb"]
    assert hash(spec) == hash(CORPORA["ptb"])
    with pytest.raises(AttributeError):
        spec.name = "x"
    with pytest.raises(TypeError):
        spec.files["train"] = spec.files["valid"]


def test_sums_match_shared_sha256sums_file():
    sums_file = SHARED_DATA / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip("shared data folder not present")
    sums = dict(reversed(line.split()) for line in sums_file.read_text().splitlines() if line)
    names = ("ptb", "ptb-char", "wikitext-2", "tinyshakespeare")
    registry = {f.path: f.sha256 for n in names for f in CORPORA[n].files.values()}
    assert registry == sums


# --- search_path ----------------------------------------------------------------------------


def test_search_path_order_and_dedup(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("LSTMLM_DATA", f"{b}{os.pathsep}{a}")
    paths = search_path(a)
    cwd = Path.cwd()
    assert paths[:4] == [a, b, cwd / "data", (cwd / ".." / "shared" / "data").resolve()]
    assert len(paths) == len(set(paths))


# --- find_corpus ----------------------------------------------------------------------------


def test_find_in_data_dir(tmp_path):
    write_corpus_files(tmp_path / "d")
    paths = find_corpus("tiny", tmp_path / "d")
    assert paths == {s: (tmp_path / "d" / "tiny" / f"{s}.txt") for s in ("train", "valid", "test")}
    assert paths["valid"].read_bytes() == CONTENT["tiny/valid.txt"]


def test_find_via_env_and_cwd(tmp_path, monkeypatch):
    write_corpus_files(Path.cwd() / "data")
    assert find_corpus("tiny")["train"].parent == Path.cwd() / "data" / "tiny"
    write_corpus_files(tmp_path / "env")
    monkeypatch.setenv("LSTMLM_DATA", str(tmp_path / "env"))
    assert find_corpus("tiny")["train"].parent == tmp_path / "env" / "tiny"


def test_first_complete_root_wins(tmp_path):
    incomplete = tmp_path / "incomplete"
    write_corpus_files(incomplete, {"tiny/train.txt": CONTENT["tiny/train.txt"]})
    write_corpus_files(Path.cwd() / "data")
    assert find_corpus("tiny", incomplete)["test"] == Path.cwd() / "data" / "tiny" / "test.txt"


def test_a_data_dir_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="--data-dir .*missing: no such folder"):
        find_corpus("tiny", tmp_path / "missing")


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown corpus 'nope'.*ptb, ptb-char"):
        find_corpus("nope")


def test_not_found_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        find_corpus("tiny", tmp_path / "empty")
    msg = str(info.value)
    roots = ", ".join(str(p) for p in search_path(tmp_path / "empty"))
    hint = "download it with: lstmlm download tiny --data-dir DIR"
    assert msg == f"corpus 'tiny' not found in: {roots}; {hint}"
    assert str(tmp_path / "empty") in msg and "\n" not in msg


def test_sha_mismatch(tmp_path):
    d = tmp_path / "d"
    write_corpus_files(d, {**CONTENT, "tiny/valid.txt": b" the dog! \n"})
    with pytest.raises(ValueError) as info:
        find_corpus("tiny", d)
    msg = str(info.value)
    assert msg.startswith(f"{d / 'tiny' / 'valid.txt'}: sha256")
    assert "corrupted or modified" in msg and "lstmlm download tiny" in msg and "\n" not in msg
    # without verification the (modified) files are returned as-is
    assert find_corpus("tiny", d, verify=False)["valid"].read_bytes() == b" the dog! \n"


def test_verification_is_cached_and_notices_changes(tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_corpus_files(d)
    find_corpus("tiny", d)
    calls = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(corpora.hashlib, "sha256", lambda *a: calls.append(1) or real_sha256(*a))
    find_corpus("tiny", d)
    assert calls == []  # served from the cache
    valid = d / "tiny" / "valid.txt"
    valid.write_bytes(b" the cow \n")  # same size, new mtime
    os.utime(valid, ns=(1, 1))
    with pytest.raises(ValueError, match="corrupted or modified"):
        find_corpus("tiny", d)
    assert calls == [1]


# --- the real shared copies -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ptb", "ptb-char", "wikitext-2", "tinyshakespeare"])
def test_real_shared_copy_verifies(name):
    if not (SHARED_DATA / name).is_dir():
        pytest.skip("shared data folder not present")
    paths = find_corpus(name, SHARED_DATA)
    assert set(paths) == set(CORPORA[name].files)
    assert all(p.is_relative_to(SHARED_DATA.resolve()) for p in paths.values())


def test_real_ptb_found_from_any_cwd():
    if not (SHARED_DATA / "ptb").is_dir():
        pytest.skip("shared data folder not present")
    # cwd is an empty tmp dir (see the autouse fixture): only the repo-relative root applies
    paths = find_corpus("ptb")
    assert paths["train"] == SHARED_DATA.resolve() / "ptb" / "train.txt"
    assert paths["train"].stat().st_size == 5_101_618
