"""Shared helpers for the benchmark scripts: run a command, time it, read its JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def run_json(cmd: list[str]) -> tuple[dict[str, Any], float]:
    """Run `cmd`, return its last stdout line as JSON and its peak RSS in MB."""
    print("$ " + " ".join(cmd), file=sys.stderr)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()  # until EOF; then reap the child ourselves to get its rusage
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def lstmlm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lstmlm", *args]


def reference_cmd(*args: str) -> list[str]:
    """Command line of benchmarks/reference.py (the plain loop) with `args`."""
    return [sys.executable, str(ROOT / "benchmarks" / "reference.py"), *args]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of fn, after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# reference.py's recipe (SGD lr 20 on the per-token mean, clip 0.25, lr/4 on a plateau,
# uniform 0.1 init, 10 evaluation columns, seed 1111), spelled as lstmlm flags.
REFERENCE_RECIPE = [
    "--batch-size", "20", "--lr", "20", "--clip", "0.25", "--loss-reduction", "mean",
    "--lr-schedule", "plateau", "--lr-decay", "4", "--init-range", "0.1",
    "--optimizer", "sgd", "--eval-batch-size", "10", "--seed", "1111",
]  # fmt: skip


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `ARGS -- FLAGS` into (ARGS, FLAGS): the flags after `--` go to lstmlm."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]
