"""Preemption and concurrent resumes: SIGTERM/SIGHUP save like Ctrl-C, a refused second
`--resume` touches nothing, a folder with no checkpoint yet can be resumed."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import write_corpus
from lstmlm import storage as ckpt
from lstmlm.cli.main import main

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()

HOLD_LOCK = """
import sys, time
from pathlib import Path
from lstmlm.storage.runs import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def lstmlm(*args):
    return [sys.executable, "-m", "lstmlm", *map(str, args)]


def _progress_lines(run) -> int:
    try:
        return sum('"progress"' in line for line in (run / ckpt.METRICS).open())
    except FileNotFoundError:
        return 0


def test_a_refused_second_resume_touches_nothing(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    assert (
        main(["train", "--train", str(corpus), "--out", str(run), *TINY, "--max-steps", "3"]) == 0
    )
    temp = run / f".{ckpt.LAST}.abc123.tmp"  # the first process's checkpoint being written
    temp.write_bytes(b"partial")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            lstmlm("train", "--resume", run, "--max-steps", "6", "--quiet"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2, second.stderr
    assert "another lstmlm process" in second.stderr and "Traceback" not in second.stderr
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # the temp file and every run file untouched


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_and_say_how_to_resume(tmp_path, sig):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=1500)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        lstmlm(
            "train",
            "--train",
            corpus,
            "--out",
            run,
            *TINY,
            "--epochs",
            "50",
            "--log-every",
            "5",
            "--checkpoint-minutes",
            "0",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # The signal's default disposition, as in a terminal: under `nohup` SIGHUP comes
        # in ignored, and lstmlm rightly leaves an ignored signal alone.
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while _progress_lines(run) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    assert not (run / ckpt.LAST).exists()
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    _, meta = ckpt.load_tensors(run / ckpt.LAST)
    step = meta["trainer"]["step"]
    assert step >= 10 and f"at step {step}" in err and "Traceback" not in err
    assert f"continue with: lstmlm train --resume {run}" in err
    assert main(["train", "--resume", str(run), "--max-steps", str(step + 2), "--quiet"]) == 0


def test_a_run_without_a_checkpoint_resumes_from_step_0(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run, full = tmp_path / "run", tmp_path / "full"
    args = ["--train", str(corpus), *TINY, "--max-steps", "4"]
    assert main(["train", "--out", str(full), *args]) == 0
    assert main(["train", "--out", str(run), *args]) == 0
    for name in (ckpt.LAST, ckpt.BEST, ckpt.SUMMARY, ckpt.METRICS):
        (run / name).unlink()  # as a run preempted before its first checkpoint leaves it
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    a, _ = ckpt.load_tensors(full / ckpt.LAST)
    b, meta = ckpt.load_tensors(run / ckpt.LAST)
    assert meta["trainer"]["step"] == 4
    assert all(a[k].equal(b[k]) for k in a if k.startswith("model."))
    # and `train --out` on it says what to do
    capsys.readouterr()
    (run / ckpt.LAST).unlink()
    assert main(["train", "--out", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint yet" in err and f"--resume {run}" in err
