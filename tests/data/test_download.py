"""`download_corpus` against a real HTTP server on 127.0.0.1 (the machine has no
internet): plain files and zip archives, checked by size and sha256, extracted into split
files with their SHA256SUMS, and nothing left behind on any failure."""

import pytest

from helpers import (
    CONTENT,
    Server,
    all_files,
    archive_spec,
    isolate_corpora,
    sha,
    tiny_spec,
    write_corpus_files,
    write_zip,
)
from lstmlm.data.archives import SUMS
from lstmlm.data.corpora import CORPORA, CorpusFile, CorpusSpec, find_corpus
from lstmlm.data.download import download_corpus

SPLITS = ("train", "valid", "test")
# The member texts of a tiny WikiText-like archive, and a tiny enwik8-like member whose
# 90/5/5 byte cuts fall inside multi-byte characters (both move forward one byte).
TOKENS = {s: f" = {s} = \n the {s} text <unk> \n".encode() for s in SPLITS}
WIKI = {f"wt/wiki.{s}.tokens": TOKENS[s] for s in SPLITS}
ENWIK = b"<page>" + b"x" * 83 + "é".encode() + b"ab" + "€".encode() + b"</p>"
assert len(ENWIK) == 100 and 0x80 <= ENWIK[90] < 0xC0 and 0x80 <= ENWIK[95] < 0xC0


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data dirs leak in: empty cwd, no env overrides, no repo-side shared data."""
    isolate_corpora(tmp_path, monkeypatch)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    write_corpus_files(served)
    srv = Server(served)
    yield srv
    srv.close()


# --- plain files --------------------------------------------------------------------------


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


def test_a_failed_download_removes_the_folders_it_made(tmp_path):
    """From Python too, not only through the CLI: no empty folder stays behind."""
    bad = (tmp_path / "nowhere.txt").as_uri()
    urls = {f"tiny/{s}.txt": (bad,) for s in SPLITS}
    with pytest.raises(ValueError, match="could not download tiny/"):
        download_corpus("tiny", tmp_path / "new" / "data", urls=urls)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError):
        download_corpus("tiny", tmp_path / "kept", urls=urls)
    assert list((tmp_path / "kept").iterdir()) == []  # a folder that was there stays


# --- archives -----------------------------------------------------------------------------


def serve_wiki(tmp_path, server, members=WIKI, name="wt") -> CorpusSpec:
    """A WikiText-like archive at SERVER/NAME.zip and its spec, registered as NAME."""
    z = write_zip(tmp_path / "served" / f"{name}.zip", members)
    spec = archive_spec(
        name,
        "word",
        z,
        [f"{server.url}/{name}.zip"],
        members={s: f"wt/wiki.{s}.tokens" for s in SPLITS},
    )
    CORPORA[name] = spec
    return spec


def serve_enwik(tmp_path, server, member_sha256: str = "") -> CorpusSpec:
    z = write_zip(tmp_path / "served" / "ew.zip", {"ew": ENWIK})
    spec = archive_spec(
        "ew",
        "char",
        z,
        [f"{server.url}/ew.zip"],
        member="ew",
        cut=(90, 5, 5),
        member_sha256=member_sha256 or sha(ENWIK),
    )
    CORPORA["ew"] = spec
    return spec


def test_archive_download_extracts_the_splits_and_their_sums(tmp_path, server):
    spec = serve_wiki(tmp_path, server)
    seen: dict[str, list] = {"download": [], "extract": []}
    dest = tmp_path / "dest"
    paths = download_corpus(
        "wt",
        dest,
        progress=lambda d, t: seen["download"].append((d, t)),
        extract_progress=lambda d, t: seen["extract"].append((d, t)),
    )
    assert all_files(dest) == ["wt/SHA256SUMS", "wt/test.txt", "wt/train.txt", "wt/valid.txt"]
    assert paths == {s: dest / "wt" / f"{s}.txt" for s in SPLITS}
    assert {s: p.read_bytes() for s, p in paths.items()} == TOKENS
    sums = (dest / "wt" / SUMS).read_text().splitlines()
    assert sums == [f"{spec.archive.sha256}  wt.zip"] + [
        f"{sha(TOKENS[s])}  {s}.txt" for s in SPLITS
    ]
    assert seen["download"][-1] == (spec.archive.size, spec.archive.size)
    assert seen["extract"][-1] == (sum(map(len, TOKENS.values())),) * 2
    assert find_corpus("wt", dest) == paths
    server.requests.clear()
    assert download_corpus("wt", dest) == paths  # already there: no request
    assert server.requests == []


def test_enwik8_like_member_is_cut_90_5_5_at_character_starts(tmp_path, server):
    serve_enwik(tmp_path, server)
    paths = download_corpus("ew", tmp_path / "dest")
    parts = [paths[s].read_bytes() for s in SPLITS]
    assert parts == [ENWIK[:91], ENWIK[91:96], ENWIK[96:]]  # 90 and 95 are mid-character
    assert [len(p) for p in parts] == [91, 5, 4] and b"".join(parts) == ENWIK
    assert parts[1].decode("utf-8") == "ab€"
    assert find_corpus("ew", tmp_path / "dest") == paths


@pytest.mark.parametrize("failure", ["sha256", "cut", "truncated", "member", "error", "sum"])
def test_a_failed_archive_download_leaves_nothing(tmp_path, server, failure):
    """A wrong sha256, a connection cut mid-archive, an archive that is not a zip, a
    missing member, a server error, a member unlike its published sum: a one-line error,
    and neither the data dir nor anything in it remains."""
    served = tmp_path / "served"
    if failure == "sum":
        spec = serve_enwik(tmp_path, server, member_sha256=sha(b"another text"))
    else:
        spec = serve_wiki(tmp_path, server)
    if failure == "sha256":  # same size, one byte changed
        data = bytearray((served / "wt.zip").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (served / "wt.zip").write_bytes(data)
    elif failure == "cut":
        server.cut["/wt.zip"] = spec.archive.size // 2
    elif failure == "truncated":  # pinned as it is: passes the sha256, fails as a zip
        (served / "half.zip").write_bytes((served / "wt.zip").read_bytes()[:-30])
        half = (served / "half.zip").read_bytes()
        CORPORA["wt"] = archive_spec(
            "wt", "word", half, [f"{server.url}/half.zip"], members=spec.archive.members
        )
    elif failure == "member":
        serve_wiki(tmp_path, server, {k: v for k, v in WIKI.items() if "valid" not in k})
    elif failure == "error":
        server.errors["/wt.zip"] = 500
    messages = {
        "sha256": "could not download wt/wt.zip .*sha256 mismatch",
        "cut": r"could not download wt/wt.zip .*the transfer stopped after \d+ of \d+ bytes",
        "truncated": "wt.zip: not a readable zip archive",
        "member": "wt.zip: the archive has no member 'wt/wiki.valid.tokens'",
        "error": "could not download wt/wt.zip .*HTTP Error 500",
        "sum": "ew.zip: member 'ew' does not match its published sha256",
    }
    dest = tmp_path / "new" / "data"
    with pytest.raises(ValueError, match=messages[failure]) as info:
        download_corpus(spec.name, dest)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError):
        download_corpus(spec.name, tmp_path / "kept")
    assert all_files(tmp_path / "kept") == [] and list((tmp_path / "kept").iterdir()) == []


def test_ctrl_c_while_extracting_leaves_nothing(tmp_path, server):
    serve_wiki(tmp_path, server)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_corpus("wt", tmp_path / "dest", extract_progress=interrupt)
    assert not (tmp_path / "dest").exists()


def test_a_damaged_archive_corpus_is_downloaded_again(tmp_path, server):
    """Over a folder whose files do not match: the split files and SHA256SUMS are
    replaced, a file of the user's in that folder stays."""
    serve_wiki(tmp_path, server)
    dest = tmp_path / "dest"
    write_corpus_files(dest, {"wt/train.txt": b"damaged", "wt/notes.md": b"mine"})
    paths = download_corpus("wt", dest)
    assert paths["train"].read_bytes() == TOKENS["train"]
    assert (dest / "wt" / "notes.md").read_bytes() == b"mine"
    assert all_files(dest) == [
        "wt/SHA256SUMS",
        "wt/notes.md",
        "wt/test.txt",
        "wt/train.txt",
        "wt/valid.txt",
    ]
    assert find_corpus("wt", dest) == paths


def test_the_mirror_serves_an_archive_at_corpus_slash_file(tmp_path, server, monkeypatch):
    spec = serve_wiki(tmp_path, server)
    write_zip(tmp_path / "mirror" / "wt" / "wt.zip", WIKI)
    mirror = Server(tmp_path / "mirror")
    try:
        monkeypatch.setenv("LSTMLM_MIRROR", mirror.url)
        download_corpus("wt", tmp_path / "dest")
        assert mirror.requests == ["/wt/wt.zip"] and server.requests == []
        assert spec.archive.urls == (f"{server.url}/wt.zip",)
    finally:
        mirror.close()
