"""Disk full (ENOSPC) while a run writes metrics, config, vocabulary or summary: one line
naming the file, no torn line that breaks readers, and a folder that can be retried.

ENOSPC is simulated by patching the write (os.write for metrics appends, os.replace for
the files written whole), in this process: a tiny tmpfs is not available here."""

import errno
import json
import os

from helpers import write_corpus
from lstmlm import files, storage
from lstmlm.cli.main import main
from lstmlm.storage.curves import read_curves

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def train(capsys, *args):
    capsys.readouterr()
    rc = main(["train", *map(str, args)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_a_failed_append_leaves_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / storage.METRICS
    files.append_line(path, json.dumps({"event": "a"}))
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd, data):
        real(fd, bytes(data[: len(data) // 2]))  # part of the line reaches the disk ...
        raise ENOSPC  # ... then the disk is full

    monkeypatch.setattr(os, "write", half_then_full)
    try:
        files.append_line(path, json.dumps({"event": "b", "x": "y" * 100}))
    except OSError as e:
        assert e.filename == str(path) and "No space left on device" in e.strerror
    else:
        raise AssertionError("no error")
    monkeypatch.undo()
    assert path.read_bytes() == before  # the torn half is gone
    # a line torn by a crash (no error to clean up after) is ended before the next one
    with path.open("ab") as f:
        f.write(b'{"event": "tor')
    files.append_line(path, json.dumps({"event": "c"}))
    lines = path.read_text().splitlines()
    assert lines[0] == '{"event": "a"}' and lines[-1] == '{"event": "c"}' and len(lines) == 3


def test_disk_full_on_metrics_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    real = files.append_line
    count = {"n": 0}

    def full_after_three(path, line):
        count["n"] += 1
        if count["n"] > 3:
            raise OSError(errno.ENOSPC, "cannot append to it (No space left on device)", str(path))
        real(path, line)

    monkeypatch.setattr(files, "append_line", full_after_three)
    rc, lines = train(capsys, "--train", corpus, "--out", run, *TINY, "--log-every", "1",
                      "--max-steps", "8")  # fmt: skip
    monkeypatch.undo()
    assert rc == 2 and len(lines) == 1 and str(run / storage.METRICS) in lines[0], lines
    read_curves(run)  # the metrics read
    rc, lines = train(capsys, "--resume", run, "--quiet")  # from its checkpoint or step 0
    assert rc == 0, lines
    assert (run / storage.SUMMARY).exists()


def _fail_replace_of(name, monkeypatch):
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(name):
            raise ENOSPC
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_disk_full_at_start_leaves_a_folder_that_can_be_retried(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    args = ["--train", corpus, "--out", run, *TINY, "--max-steps", "3"]
    _fail_replace_of(storage.CONFIG, monkeypatch)  # vocab.json is written, config.json not
    rc, lines = train(capsys, *args)
    monkeypatch.undo()
    assert rc == 2 and len(lines) == 1 and str(run / storage.CONFIG) in lines[0], lines
    assert "No space left on device" in lines[0]
    rc, lines = train(capsys, *args)  # the same command again, once there is room
    assert rc == 0, lines


def test_disk_full_on_the_summary_then_resume_writes_it(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    _fail_replace_of(storage.SUMMARY, monkeypatch)
    rc, lines = train(capsys, "--train", corpus, "--out", run, *TINY, "--max-steps", "3")
    monkeypatch.undo()
    assert rc == 2 and len(lines) == 1 and str(run / storage.SUMMARY) in lines[0], lines
    rc, lines = train(capsys, "--resume", run)
    assert rc == 0, lines
    assert json.loads((run / storage.SUMMARY).read_text())["steps"] == 3
