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


def peak_flops(threads: int | None = None) -> dict[str, Any]:
    """This CPU's arithmetic peak, measured by benchmarks/peak_flops.c (built here with the
    system's cc): the clock under load, bf16-dot and fp32-FMA instructions per cycle per
    core, and GFLOP/s on one core and on `threads` (default: all) cores, AMX tiles
    included where the CPU has them (bf16_peak_gflops_all is the larger). {"error": ...}
    where the C compiler or AVX-512 BF16 is missing."""
    import shutil
    import tempfile

    threads = threads or os.cpu_count() or 1
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" not in flags:
        return {"error": "no AVX-512 BF16 on this CPU: the bf16 peak is not measured"}
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return {"error": f"no C compiler ({cc}) to build peak_flops.c"}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "peak_flops"
        src = ROOT / "benchmarks" / "peak_flops.c"
        build = [cc, "-O2", "-mavx512f", "-mavx512bf16", "-pthread", str(src), "-o", str(exe)]
        if "amx_bf16" in flags:  # AMX tiles: the bf16 peak on Sapphire Rapids and later
            build[1:1] = ["-mamx-tile", "-mamx-bf16", "-DWITH_AMX"]
        subprocess.run(build, check=True, capture_output=True)
        out = subprocess.run([str(exe), str(threads)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def share_of_peak(
    tokens_per_sec: float, flop_per_token: float, peak: dict[str, Any]
) -> float | None:
    """The fraction of the measured bf16 peak (all cores, AMX where present) that
    `tokens_per_sec` of a step needing `flop_per_token` FLOP per token reaches (None
    without a peak)."""
    gflops = peak.get("bf16_peak_gflops_all")
    if not gflops:
        return None
    return round(tokens_per_sec * flop_per_token / (gflops * 1e9), 3)


def matmul_flop_per_token(
    hidden: int, emb: int, vocab: int, layers: int, *, train: bool, gates: int = 4
) -> float:
    """Matrix-product FLOP per token of an LSTM (gates=4) or GRU (3) language model:
    per layer the input and recurrent products (2 FLOP per multiply-add), the decoder
    (hidden x vocab); training does each product three times (forward, d_input, d_weight).
    The medium model (2x650, 10k): 79.6 MFLOP training, 26.5 MFLOP evaluating."""
    forward = 2 * hidden * vocab
    for layer in range(layers):
        inputs = emb if layer == 0 else hidden
        forward += 2 * (inputs + hidden) * gates * hidden
    return float(3 * forward if train else forward)


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
