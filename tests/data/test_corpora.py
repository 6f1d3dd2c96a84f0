import hashlib
import os
from pathlib import Path

import pytest

from helpers import CONTENT, Server, sha, tiny_spec, write_corpus_files
from lstmlm.data import corpora
from lstmlm.data.corpora import (
    CORPORA,
    CorpusFile,
    CorpusSpec,
    download_corpus,
    find_corpus,
    search_path,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data dirs leak in: empty cwd, no env overrides, no repo-side shared data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("LSTMLM_DATA", raising=False)
    monkeypatch.delenv("LSTMLM_MIRROR", raising=False)
    monkeypatch.setitem(CORPORA, "tiny", tiny_spec())


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    write_corpus_files(served)
    srv = Server(served)
    yield srv
    srv.close()


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


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


# --- download_corpus ------------------------------------------------------------------------


def test_download_from_local_http(tmp_path, server):
    spec = tiny_spec({s: (f"{server.url}/tiny/{s}.txt",) for s in ("train", "valid", "test")})
    CORPORA["tiny"] = spec
    seen = []
    dest = tmp_path / "dest"
    paths = download_corpus("tiny", dest, progress=lambda done, total: seen.append((done, total)))
    assert all_files(dest) == ["tiny/test.txt", "tiny/train.txt", "tiny/valid.txt"]
    for split, path in paths.items():
        assert path.read_bytes() == CONTENT[f"tiny/{split}.txt"]
    n = len(CONTENT["tiny/train.txt"])
    assert (0, n) in seen and (n, n) in seen
    assert find_corpus("tiny", dest) == paths

    # a second call keeps the verified files and does not touch the network
    server.requests.clear()
    assert download_corpus("tiny", dest) == paths
    assert server.requests == []


def test_download_falls_back_to_next_url(tmp_path, server):
    urls = {
        f"tiny/{s}.txt": (f"{server.url}/missing/{s}.txt", f"{server.url}/tiny/{s}.txt")
        for s in ("train", "valid", "test")
    }
    paths = download_corpus("tiny", tmp_path / "dest", urls=urls)
    assert paths["test"].read_bytes() == CONTENT["tiny/test.txt"]
    assert "/missing/train.txt" in server.requests


def test_download_wrong_content_leaves_nothing(tmp_path, server):
    (tmp_path / "served" / "tiny" / "valid.txt").write_bytes(b" tampered \n")
    urls = {f"tiny/{s}.txt": (f"{server.url}/tiny/{s}.txt",) for s in ("train", "valid", "test")}
    dest = tmp_path / "dest"
    with pytest.raises(ValueError) as info:
        download_corpus("tiny", dest, urls=urls)
    msg = str(info.value)
    assert msg.startswith("could not download tiny/valid.txt") and "sha256" in msg
    assert "\n" not in msg
    assert all_files(dest) == ["tiny/train.txt"]  # no valid.txt, no temp file


def test_download_replaces_corrupted_file(tmp_path, server):
    dest = tmp_path / "dest"
    write_corpus_files(dest, {**CONTENT, "tiny/train.txt": b"garbage"})
    urls = {f"tiny/{s}.txt": (f"{server.url}/tiny/{s}.txt",) for s in ("train", "valid", "test")}
    download_corpus("tiny", dest, urls=urls)
    assert server.requests == ["/tiny/train.txt"]
    assert (dest / "tiny" / "train.txt").read_bytes() == CONTENT["tiny/train.txt"]


def test_download_size_limit(tmp_path, server):
    f = CorpusFile("tiny/train.txt", sha(CONTENT["tiny/train.txt"]), (), size=5)
    CORPORA["tiny"] = CorpusSpec("tiny", "word", {"train": f})
    with pytest.raises(ValueError, match="expected 5"):
        download_corpus("tiny", tmp_path / "dest", urls={f.path: (f"{server.url}/{f.path}",)})
    assert all_files(tmp_path / "dest") == []


def test_download_all_urls_fail(tmp_path):
    bad = (tmp_path / "nowhere" / "x.txt").as_uri()
    urls = {f"tiny/{s}.txt": (bad, "unknown-scheme://x") for s in ("train", "valid", "test")}
    with pytest.raises(ValueError) as info:
        download_corpus("tiny", tmp_path / "dest", urls=urls)
    msg = str(info.value)
    assert msg.startswith("could not download tiny/") and bad in msg and "unknown-scheme" in msg
    assert "\n" not in msg
    assert all_files(tmp_path / "dest") == []


def test_download_from_file_urls(tmp_path):
    write_corpus_files(tmp_path / "src")
    urls = {rel: ((tmp_path / "src" / rel).as_uri(),) for rel in CONTENT}
    paths = download_corpus("tiny", tmp_path / "dest", urls=urls)
    assert paths["train"].read_bytes() == CONTENT["tiny/train.txt"]


def test_mirror_is_tried_first(tmp_path, server, monkeypatch):
    broken = (tmp_path / "nowhere.txt").as_uri()
    CORPORA["tiny"] = tiny_spec({s: (broken,) for s in ("train", "valid", "test")})
    monkeypatch.setenv("LSTMLM_MIRROR", server.url + "/")
    paths = download_corpus("tiny", tmp_path / "dest")
    assert sorted(server.requests) == ["/tiny/test.txt", "/tiny/train.txt", "/tiny/valid.txt"]
    assert paths["valid"].read_bytes() == CONTENT["tiny/valid.txt"]


def test_bad_mirror_falls_back_to_builtin_urls(tmp_path, server, monkeypatch):
    CORPORA["tiny"] = tiny_spec({s: (f"{server.url}/tiny/{s}.txt",) for s in CORPORA["tiny"].files})
    monkeypatch.setenv("LSTMLM_MIRROR", f"{server.url}/no-such-mirror")
    download_corpus("tiny", tmp_path / "dest")
    assert "/no-such-mirror/tiny/train.txt" in server.requests
    assert all_files(tmp_path / "dest") == ["tiny/test.txt", "tiny/train.txt", "tiny/valid.txt"]


def test_download_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus"):
        download_corpus("nope", tmp_path)


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
