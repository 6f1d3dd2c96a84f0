"""`lstmlm train --nproc N` is one process tree: a signal to the launcher reaches torchrun
and every worker, none survives; a wrong --resume is one line before torchrun starts."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import write_corpus
from lstmlm import storage as ckpt
from lstmlm.cli.main import main

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()


def _children() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            out[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _children()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _progress_lines(run) -> int:
    try:
        return sum('"progress"' in line for line in (run / ckpt.METRICS).open())
    except FileNotFoundError:
        return 0


def test_sigterm_to_the_launcher_reaches_every_worker(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=1500)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lstmlm", "train", "--nproc", "2", "--train", str(corpus),
           "--out", str(run), *TINY, "--epochs", "50", "--log-every", "2",
           "--checkpoint-minutes", "0", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 180
    while _progress_lines(run) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    tree = _descendants(proc.pid)
    assert len(tree) >= 3  # torchrun and its two workers
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if _alive(p)], err  # no orphan trains on
    _, meta = ckpt.load_tensors(run / ckpt.LAST)  # the workers saved on the way out
    assert meta["trainer"]["world_size"] == 2
    assert f"--resume {run} --nproc 2" in err
    assert err.count("lstmlm: interrupted") == 1 and "Traceback" not in err, err  # rank 0 only


def test_a_wrong_resume_is_one_line_before_torchrun(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    run = tmp_path / "run"
    assert (
        main(["train", "--train", str(corpus), "--out", str(run), *TINY, "--max-steps", "3"]) == 0
    )
    capsys.readouterr()
    rc = main(["train", "--resume", str(run), "--nproc", "3", "--max-steps", "9"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "--nproc 1" in lines[0], lines
    rc = main(["train", "--resume", str(run), "--nproc", "2", "--max-steps", "3"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "already finished" in lines[0], lines


def test_more_processes_than_cores_warns(tmp_path, caplog, monkeypatch):
    from lstmlm.training import distributed

    corpus = write_corpus(tmp_path / "c.txt", n_lines=80)
    launched = []
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(distributed, "launch", lambda n, argv: launched.append(n) or 0)
    with caplog.at_level(logging.WARNING, logger="lstmlm"):
        rc = main(["train", "--nproc", "2", "--train", str(corpus), "--out",
                   str(tmp_path / "r"), *TINY])  # fmt: skip
    assert rc == 0 and launched == [2]  # checked, warned, then launched
    assert any("more than this machine's 1 CPU cores" in r.getMessage() for r in caplog.records)
