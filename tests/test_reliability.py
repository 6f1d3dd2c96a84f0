"""Checkpoint writes that fail or die, foreign checkpoints, unwritable folders, absurd flags."""

import errno
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import write_corpus
from lstmlm import files
from lstmlm import storage as ckpt
from lstmlm.cli.main import main

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()


def train(capsys, *args) -> tuple[int, list[str]]:
    """`lstmlm train ARGS` in this process: (exit code, stderr lines)."""
    try:
        rc = main(["train", *map(str, args)])
    except SystemExit as e:  # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


def assert_one_line(rc, lines, *fragments):
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("lstmlm") and "error: " in lines[0], (
        lines
    )  # argparse: "lstmlm train"
    for f in fragments:
        assert f in lines[0], lines[0]


def temp_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(files.TMP_SUFFIX)]


# --- a checkpoint write that fails ----------------------------------------------------------


@pytest.mark.parametrize("fail_in", ["fsync", "replace", "mkstemp"])
def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, fail_in):
    path = tmp_path / ckpt.LAST
    files.atomic_write(path, b"old")
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def boom(*a, **k):
        raise err

    target = {"fsync": (os, "fsync"), "replace": (os, "replace"), "mkstemp": (tempfile, "mkstemp")}
    monkeypatch.setattr(*target[fail_in], boom)
    with pytest.raises(OSError) as e:
        files.atomic_write(path, b"new" * 1000)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert "No space left on device" in e.value.strerror and "unchanged" in e.value.strerror
    assert path.read_bytes() == b"old"
    assert temp_files(tmp_path) == []


def test_disk_full_mid_run_stops_with_one_line_and_keeps_last(tmp_path, monkeypatch, capsys):
    # last.safetensors is written at the end of epochs 1 and 2: the second write hits ENOSPC.
    corpus = write_corpus(tmp_path / "c.txt")
    run = tmp_path / "run"
    real_replace = os.replace
    first = {}

    def replace(src, dst):
        if str(dst).endswith(ckpt.LAST):
            if first:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_replace(src, dst)
            first["bytes"] = pathlib.Path(dst).read_bytes()
            return
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    rc, lines = train(capsys, "--train", corpus, "--out", run, *TINY, "--epochs", "3")
    monkeypatch.undo()
    assert_one_line(rc, lines, str(run / ckpt.LAST), "No space left on device", "unchanged")
    assert (run / ckpt.LAST).read_bytes() == first["bytes"]
    ckpt.load_run(run, "last")
    ckpt.load_run(run, "best")
    assert temp_files(run) == []
    assert not (run / ckpt.SUMMARY).exists()


KILL_ON_SECOND_LAST_WRITE = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
real = os.replace
def replace(src, dst):
    if str(dst).endswith("last.safetensors") and Path(dst).exists():
        os.kill(os.getpid(), signal.SIGKILL)  # the new file is written, not yet renamed
    return real(src, dst)
os.replace = replace
from lstmlm.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_writer_killed_mid_write_then_resume_cleans_up(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=100)
    run = tmp_path / "run"
    args = ["train", "--train", str(corpus), "--out", str(run), *TINY, "--epochs", "2"]
    r = subprocess.run(
        [sys.executable, "-c", KILL_ON_SECOND_LAST_WRITE, *args], capture_output=True, timeout=120
    )
    assert r.returncode == -9, r.stderr
    assert len(temp_files(run)) == 1  # the torn write's temp file ...
    _, meta = ckpt.load_tensors(run / ckpt.LAST)  # ... and the old checkpoint, whole
    assert meta["trainer"]["epoch"] == 1
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert temp_files(run) == []
    assert (run / ckpt.SUMMARY).exists()


# --- a checkpoint from another run ----------------------------------------------------------


def test_resume_with_another_vocab_checkpoint_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(capsys, "--train", write_corpus(tmp_path / "a.txt"), "--out", a, *TINY,
                 "--epochs", "1", "--max-steps", "3")[0] == 0  # fmt: skip
    other = tmp_path / "b.txt"
    other.write_text("one two three four five six seven eight nine ten\n" * 60)
    assert train(capsys, "--train", other, "--out", b, *TINY, "--max-steps", "3")[0] == 0
    shutil.copy(b / ckpt.LAST, a / ckpt.LAST)
    before = (a / ckpt.BEST).read_bytes()
    rc, lines = train(capsys, "--resume", a)
    assert_one_line(rc, lines, str(a / ckpt.LAST), "cannot resume", "different vocabulary")
    assert (a / ckpt.BEST).read_bytes() == before


# --- output folders -------------------------------------------------------------------------


def test_out_under_a_regular_file_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    corpus = write_corpus(tmp_path / "c.txt")
    rc, lines = train(capsys, "--train", corpus, "--out", blocker / "run", *TINY)
    assert_one_line(rc, lines, "cannot write the run folder")
    assert blocker.read_text() == "not a folder"


def test_permission_denied_fails_before_training(tmp_path, monkeypatch, capsys):
    # Tests run as root, so chmod cannot deny; the probe write is refused instead.
    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name == ".write-test":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    corpus = write_corpus(tmp_path / "c.txt")
    rc, lines = train(capsys, "--train", corpus, "--out", tmp_path / "run", *TINY)
    assert_one_line(rc, lines, "cannot write the run folder", "Permission denied")
    assert not (tmp_path / "run" / ckpt.CONFIG).exists()
    assert not (tmp_path / "run" / ckpt.METRICS).exists()


def test_out_in_a_users_folder_keeps_their_files(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    corpus = write_corpus(tmp_path / "c.txt")
    rc, _ = train(capsys, "--train", corpus, "--out", folder, *TINY, "--max-steps", "3")
    assert rc == 0
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert (folder / ckpt.SUMMARY).exists()


def test_out_holding_a_file_named_like_a_run_file_is_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.json").write_text('{"mine": true}')
    corpus = write_corpus(tmp_path / "c.txt")
    rc, lines = train(capsys, "--train", corpus, "--out", folder, *TINY)
    assert_one_line(rc, lines, "holds summary.json", "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json"]
    assert (folder / "summary.json").read_text() == '{"mine": true}'


# --- absurd flag values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,fragment",
    [
        ("--emb-size 0", "emb-size"),
        ("--hidden-size 0", "hidden-size"),
        ("--num-layers 0", "num-layers"),
        ("--hidden-sizes 16 0", "hidden-sizes"),
        ("--batch-size 0", "batch-size"),
        ("--batch-size 100000", "too few for batch size"),
        ("--eval-batch-size 0", "eval-batch-size"),
        ("--bptt 0", "bptt"),
        ("--bptt -5", "bptt"),
        ("--epochs 0", "epochs"),
        ("--epochs -1", "epochs"),
        ("--max-minutes 0", "max-minutes"),
        ("--max-minutes nan", "max-minutes"),
        ("--max-steps 0", "max-steps"),
        ("--lr 0", "lr"),
        ("--lr inf", "lr"),
        ("--lr -nan", "lr"),
        ("--clip nan", "clip"),
        ("--momentum -1", "momentum"),
        ("--weight-decay inf", "weight-decay"),
        ("--dropout nan", "dropout"),
        ("--wdrop 1", "wdrop"),
        ("--lr-decay 0.5", "lr-decay"),
        ("--init-range nan", "init-range"),
        ("--log-every 0", "log-every"),
        ("--checkpoint-minutes -1", "checkpoint-minutes"),
        ("--sample-temperatures nan", "sample-temperatures"),
        ("--nan-patience 0", "nan-patience"),
        ("--nan-max-restores -1", "nan-max-restores"),
        ("--max-vocab 1", "max-vocab"),
        ("--min-freq 0", "min-freq"),
        ("--emb-size many", "emb-size"),
    ],
)
def test_absurd_flag_is_one_line_and_leaves_no_run(tmp_path, capsys, flags, fragment):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=40)
    out = tmp_path / "out"
    rc, lines = train(capsys, "--train", corpus, "--out", out, *TINY, *flags.split())
    assert_one_line(rc, lines, fragment)
    assert not out.exists()


def test_a_model_too_big_for_memory_is_one_line_and_leaves_no_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=40)
    out = tmp_path / "out"
    # 4 x 10^7 x 10^7 floats: beyond any address space, so the allocator refuses at once
    flags = ["--emb-size", "16", "--hidden-size", "10000000", "--num-layers", "1", "--quiet"]
    rc, lines = train(capsys, "--train", corpus, "--out", out, *flags)
    assert_one_line(rc, lines, "does not fit in memory", "--hidden-size 10000000")
    assert not out.exists()


def test_a_failed_overwrite_keeps_the_old_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    out = tmp_path / "keep"
    rc, _ = train(capsys, "--train", corpus, "--out", out, *TINY, "--max-steps", "5")
    assert rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # a cutoff past this small vocabulary: refused only once the vocabulary is known
    bad = ["--softmax", "adaptive", "--cutoffs", "5000", "--max-steps", "5", "--overwrite"]
    rc, lines = train(capsys, "--train", corpus, "--out", out, *TINY, *bad)
    assert_one_line(rc, lines, "cutoff")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_resuming_a_stopped_run_never_makes_best_worse(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=200)
    run = tmp_path / "run"
    rc, _ = train(capsys, "--train", corpus, "--out", run, *TINY, "--max-steps", "20")
    assert rc == 0
    _, best = ckpt.load_tensors(run / ckpt.BEST)
    _, last = ckpt.load_tensors(run / ckpt.LAST)
    # the checkpoint knows the best loss found at the end, so a resume compares against it
    assert last["trainer"]["best_loss"] == best["valid_loss"]
    # nothing left to do: said so, and nothing changes
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc, lines = train(capsys, "--resume", run)
    assert_one_line(rc, lines, "already finished", "--max-steps")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    # more steps: best is replaced only by a better model
    rc, _ = train(capsys, "--resume", run, "--max-steps", "21", "--quiet")
    assert rc == 0
    _, best2 = ckpt.load_tensors(run / ckpt.BEST)
    assert best2["valid_loss"] <= best["valid_loss"]


def test_a_run_being_trained_cannot_be_trained_by_a_second_process(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    rc, _ = train(capsys, "--train", corpus, "--out", run, *TINY, "--max-steps", "5")
    assert rc == 0
    with ckpt.run_lock(run):  # as a training process holds it
        rc, lines = train(capsys, "--resume", run, "--max-steps", "10")
        assert_one_line(rc, lines, "another lstmlm process", str(os.getpid()))
        rc, lines = train(capsys, "--train", corpus, "--out", run, *TINY, "--overwrite")
        assert_one_line(rc, lines, "another lstmlm process")
    rc, _ = train(capsys, "--resume", run, "--max-steps", "10")  # released
    assert rc == 0


def test_run_files_follow_the_umask(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    old = os.umask(0o022)
    try:
        rc, _ = train(
            capsys, "--train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", "5"
        )
    finally:
        os.umask(old)
    assert rc == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    for name in (ckpt.CONFIG, ckpt.VOCAB, ckpt.LAST, ckpt.BEST, ckpt.SUMMARY):
        assert modes[name] == 0o644, modes  # not mkstemp's 0600


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--train", "MISSING"], "no such file"),
        (["--softmax", "adaptive", "--cutoffs", "5000"], "cutoff"),
        (["--batch-size", "1000"], "too few for batch size 1000 x 2 processes"),
    ],
)
def test_nproc_checks_before_starting_processes(tmp_path, capsys, flags, fragment):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=40)
    flags = [str(tmp_path / "missing.txt") if f == "MISSING" else f for f in flags]
    if "--train" not in flags:
        flags = ["--train", str(corpus), *flags]
    out = tmp_path / "out"
    rc, lines = train(capsys, "--nproc", "2", "--out", out, *TINY, *flags)  # flags win
    assert_one_line(rc, lines, fragment)  # one line from here, not one per process
    assert not out.exists()


def test_a_run_on_a_relative_path_works_from_another_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    write_corpus(tmp_path / "in" / "c.txt", n_lines=80)
    monkeypatch.chdir(tmp_path)
    rc, _ = train(capsys, "--train", "in/c.txt", "--out", "run", *TINY, "--max-steps", "5")
    assert rc == 0
    monkeypatch.chdir(tmp_path / "in")  # elsewhere: the run still finds its text
    assert main(["evaluate", "../run", "--split", "valid"]) == 0
    rc, _ = train(capsys, "--resume", "../run", "--max-steps", "8")
    assert rc == 0


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--min-freq", "100000"], "only <eos> and <unk>"),
        (["--corpus", "ptb", "--data-dir", "NOWHERE"], "no such folder"),
    ],
)
def test_text_that_cannot_make_a_model_is_one_line(tmp_path, capsys, flags, fragment):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=40)
    flags = [str(tmp_path / "nowhere") if f == "NOWHERE" else f for f in flags]
    source = [] if "--corpus" in flags else ["--train", str(corpus)]
    rc, lines = train(capsys, *source, "--out", tmp_path / "out", *TINY, *flags)
    assert_one_line(rc, lines, fragment)


def test_resume_with_another_out_is_refused(tmp_path, capsys):
    rc, lines = train(capsys, "--resume", tmp_path / "a", "--out", tmp_path / "b")
    assert_one_line(rc, lines, "drop --out")


def test_a_changed_text_is_not_resumed_silently(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=120)
    run = tmp_path / "run"
    rc, _ = train(capsys, "--train", corpus, "--out", run, *TINY, "--max-steps", "5")
    assert rc == 0
    rc, _ = train(capsys, "--resume", run, "--max-steps", "7")  # same text: fine
    assert rc == 0
    with corpus.open("a") as f:
        f.write("a new line moves the valid/test split\n")
    rc, lines = train(capsys, "--resume", run, "--max-steps", "9")
    assert_one_line(rc, lines, "cannot resume exactly", "has changed since it was trained")
    assert main(["evaluate", str(run), "--split", "valid"]) == 0  # scored, with a warning
    assert "has changed since it was trained" in capsys.readouterr().err
