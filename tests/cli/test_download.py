"""`lstmlm download --if-missing`: what the Quick start demo runs on a machine without the
corpus (a real HTTP server on 127.0.0.1 stands in for the corpus's URLs)."""

import json
import math

import pytest

from helpers import CONTENT, Server, tiny_spec, write_corpus_files
from lstmlm.cli.main import main
from lstmlm.data.corpora import CORPORA


@pytest.fixture
def server(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_corpus_files(served)
    srv = Server(served)
    urls = {s: (f"{srv.url}/tiny/{s}.txt",) for s in ("train", "valid", "test")}
    monkeypatch.setitem(CORPORA, "tiny", tiny_spec(urls))
    monkeypatch.delenv("LSTMLM_DATA", raising=False)
    monkeypatch.delenv("LSTMLM_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)  # ./data and ../shared/data are empty here
    yield srv
    srv.close()


def test_if_missing_downloads_once_then_finds_it(tmp_path, server, capsys):
    assert main(["download", "tiny", "--if-missing", "--data-dir", "data", "--quiet"]) == 0
    for split in ("train", "valid", "test"):
        got = (tmp_path / "data" / "tiny" / f"{split}.txt").read_bytes()
        assert got == CONTENT[f"tiny/{split}.txt"]
    assert len(server.requests) == 3
    capsys.readouterr()
    server.requests.clear()
    assert main(["download", "tiny", "--if-missing", "--data-dir", "data", "--quiet"]) == 0
    assert server.requests == []  # found on the search path: nothing fetched
    assert "(already there)" in capsys.readouterr().out


def test_if_missing_finds_a_copy_on_the_search_path(tmp_path, server, monkeypatch, capsys):
    write_corpus_files(tmp_path / "elsewhere")
    monkeypatch.setenv("LSTMLM_DATA", str(tmp_path / "elsewhere"))
    assert main(["download", "tiny", "--if-missing", "--data-dir", "data", "--quiet"]) == 0
    assert server.requests == [] and not (tmp_path / "data").exists()
    assert str(tmp_path / "elsewhere") in capsys.readouterr().out


def test_a_damaged_copy_is_an_error_not_a_silent_download(tmp_path, server, capsys):
    write_corpus_files(tmp_path / "data", {**CONTENT, "tiny/train.txt": b"damaged"})
    assert main(["download", "tiny", "--if-missing", "--data-dir", "data", "--quiet"]) == 2
    assert "does not match" in capsys.readouterr().err and server.requests == []


def test_a_failed_download_leaves_no_empty_folder(tmp_path, server, capsys, monkeypatch):
    bad = (tmp_path / "nowhere.txt").as_uri()
    monkeypatch.setitem(CORPORA, "tiny", tiny_spec({s: (bad,) for s in ("train", "valid")}))
    argv = ["download", "tiny", "--data-dir", "new/data", "--quiet"]
    assert main(argv) == 2
    assert "could not download tiny/" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither new/data/tiny nor new/data nor new
    (tmp_path / "kept").mkdir()
    assert main(["download", "tiny", "--data-dir", "kept", "--quiet"]) == 2
    assert list((tmp_path / "kept").iterdir()) == []  # a folder that was there stays


def test_download_an_archive_corpus_then_train_on_its_one_line_text(tmp_path, server, capsys):
    """A text8-like corpus end to end: one line of a-z and space with no newline, cut by
    bytes, found on the search path and trained on at the char level."""
    import random

    from helpers import archive_spec, write_zip

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "anarchism", "originated"]
    text = " ".join(rng.choice(words) for _ in range(400)).encode()[:2000]
    z = write_zip(tmp_path / "served" / "t8.zip", {"t8": text})
    spec = archive_spec(
        "t8", "char", z, [f"{server.url}/t8.zip"], member="t8", cut=(1800, 100, 100)
    )
    CORPORA["t8"] = spec
    assert main(["download", "t8", "--data-dir", "data", "--quiet"]) == 0
    train = (tmp_path / "data" / "t8" / "train.txt").read_bytes()
    assert train == text[:1800] and b"\n" not in train
    argv = ["train", "--corpus", "t8", "--out", "run", "--max-steps", "3", "--quiet"]
    argv += ["--emb-size", "8", "--hidden-size", "8", "--num-layers", "1"]
    argv += ["--batch-size", "4", "--bptt", "8", "--eval-batch-size", "2"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run"]["data"]["corpus"] == "t8" and config["level"] == "char"
    assert config["vocab_size"] == len(set(train.decode())) + 2  # the characters, <eos>, <unk>
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and math.isfinite(summary["test_bpc"])
