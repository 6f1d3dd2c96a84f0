"""A training process killed with SIGKILL resumes to bit-identical weights."""

import json
import signal
import subprocess
import sys
import time

import torch

from helpers import write_corpus
from lstmlm import storage as ckpt

ARGS = [
    "--emb-size",
    "24",
    "--hidden-size",
    "24",
    "--num-layers",
    "2",
    "--dropout",
    "0.2",
    "--batch-size",
    "4",
    "--bptt",
    "6",
    "--epochs",
    "2",
    "--lr",
    "5",
    "--seed",
    "7",
    "--log-every",
    "5",
    "--quiet",
]


def train(*args):
    return [sys.executable, "-m", "lstmlm", "train", *map(str, args)]


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=1500)
    full = subprocess.run(
        train("--train", corpus, "--out", tmp_path / "full", *ARGS),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr

    run = tmp_path / "killed"
    # Checkpoint about every 0.2 s so the kill lands after some mid-epoch checkpoints.
    proc = subprocess.Popen(
        train("--train", corpus, "--out", run, *ARGS, "--checkpoint-minutes", "0.003"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run / ckpt.LAST).exists() and _progress_lines(run) >= 8:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / ckpt.SUMMARY).exists()  # it really died before finishing
    _, meta = ckpt.load_tensors(run / ckpt.LAST)  # the last checkpoint is whole
    assert meta["trainer"]["step"] > 0 and meta["trainer"]["offset"] > 0  # mid-epoch

    resumed = subprocess.run(
        train("--resume", run, "--quiet"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    a, _ = ckpt.load_tensors(tmp_path / "full" / ckpt.LAST)
    b, _ = ckpt.load_tensors(run / ckpt.LAST)
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    assert (
        json.loads((run / ckpt.SUMMARY).read_text())["valid_ppl"]
        == json.loads((tmp_path / "full" / ckpt.SUMMARY).read_text())["valid_ppl"]
    )


def _progress_lines(run) -> int:
    try:
        return sum('"progress"' in line for line in (run / ckpt.METRICS).open())
    except FileNotFoundError:
        return 0


def test_ctrl_c_saves_at_a_step_and_resume_matches_uninterrupted(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=1500)
    run = tmp_path / "stopped"
    long = [*ARGS, "--epochs", "50", "--checkpoint-minutes", "0"]  # no checkpoint of its own
    proc = subprocess.Popen(
        train("--train", corpus, "--out", run, *long),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _progress_lines(run) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    assert not (run / ckpt.LAST).exists()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    _, meta = ckpt.load_tensors(run / ckpt.LAST)  # saved on the way out
    step = meta["trainer"]["step"]
    assert step >= 20 and f"interrupted at step {step}" in err
    assert f"--resume {run}" in err and "Traceback" not in err

    # Resuming it to step + 5 ends exactly where an uninterrupted run of step + 5 does.
    stop = str(step + 5)
    resumed = subprocess.run(
        train("--resume", run, "--max-steps", stop, "--quiet"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run(
        train("--train", corpus, "--out", tmp_path / "full", *long, "--max-steps", stop),
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0, full.stderr
    a, _ = ckpt.load_tensors(tmp_path / "full" / ckpt.LAST)
    b, meta_b = ckpt.load_tensors(run / ckpt.LAST)
    assert meta_b["trainer"]["step"] == step + 5
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
