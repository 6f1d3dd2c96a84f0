"""`lstmlm download --if-missing`: what the Quick start demo runs on a machine without the
corpus (a real HTTP server on 127.0.0.1 stands in for the corpus's URLs)."""

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
