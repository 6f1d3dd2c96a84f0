"""How fast lstmlm gets from a big text to its first training step, cold and cached.

    python benchmarks/bench_data.py [--sizes-mb 10 100 1000] [--levels word char bpe]
                                    [--source wikitext-2/train.txt] [--workdir DIR]

For each size a text is synthesized in a temp folder by repeating a shared corpus
(default WikiText-2's train file, 10.8 MB) up to that many MB (1 MB = 2**20 bytes); never
in the repository. For each size and level `lstmlm train --train TEXT --level L` runs a
tiny model (1x32 LSTM; the model is not what is measured) twice with one empty token
cache of its own (`$LSTMLM_TOKEN_CACHE`):

  cold    the first run: it reads the text, builds the vocabulary (or trains the bpe
          tokenizer), tokenizes all three splits and writes the token cache
  cached  a second run on the same text, the cache already there

Each run is watched from outside: its time to the first step is from the moment the
process is started (Python and torch imports included) to the first training record in
RUN/metrics.jsonl (`--log-every 1`), and its peak resident memory is the process's
VmHWM (also RssAnon and RssFile, the memory-mapped pages) read at that moment; then it
is killed. cold_minus_cached_mb_s is the text's bytes over (cold - cached) first-step
time: everything the cache saves (hashing, reading, vocabulary or tokenizer training,
tokenizing, writing the cache). after_import_s subtracts the bare import time of the CLI
(`python -c "import lstmlm.cli.main"`, median of 3), what any command pays before it
reads a byte. A PTB row (`--corpus ptb`) is measured too.

tokenize_mb_s is tokenizing alone: in a child process with the cache off, the text's
bytes over the time `load_dataset` takes with the vocabulary given (checking the file,
one streamed tokenizing pass, the ids written and mapped); new_vocab_mb_s the same for
a new run's first load (the vocabulary counted in that same pass; for bpe the tokenizer
trained on the train split first), with that child's peak RSS.

Prints one JSON object with every row and the machine. Time only on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import SHARED, lstmlm_cmd, machine

MB = 1 << 20
TINY = ["--emb-size", "32", "--hidden-size", "32", "--num-layers", "1", "--no-tie-weights"]
RUN_FLAGS = [*TINY, "--max-steps", "1000000", "--log-every", "1", "--quiet", "--device", "cpu"]


def synthesize(source: Path, size_mb: int, out: Path) -> Path:
    """`out`, `size_mb` MB of `source` repeated (cut at a line end)."""
    data = source.read_bytes()
    target = size_mb * MB
    with out.open("wb") as f:
        written = 0
        while written + len(data) <= target:
            f.write(data)
            written += len(data)
        rest = data[: max(target - written, 0)]
        rest = rest[: rest.rfind(b"\n") + 1]
        f.write(rest)
    return out


def _status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile of process `pid`, in MB."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            got[key] = int(value.split()[0]) // 1024
    return got


def first_step(args: list[str], cache: Path, run: Path, timeout: float) -> dict[str, Any]:
    """Start `lstmlm train ARGS --out RUN` and watch it until its first training record."""
    env = {**os.environ, "LSTMLM_TOKEN_CACHE": str(cache)}
    metrics = run / "metrics.jsonl"
    t0 = time.perf_counter()
    p = subprocess.Popen(
        lstmlm_cmd("train", *args, "--out", str(run), *RUN_FLAGS),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    mem: dict[str, int] = {}
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit(f"lstmlm train ended early ({p.returncode}): {p.stderr.read()}")
            mem = _status(p.pid) or mem
            if metrics.exists() and any(
                '"step"' in line for line in metrics.read_text().splitlines()
            ):
                seconds = time.perf_counter() - t0
                mem = _status(p.pid)
                break
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"no first step after {timeout:.0f} s: {' '.join(args)}")
            time.sleep(0.01)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
    return {"first_step_s": round(seconds, 3), **{f"{k}_mb": v for k, v in mem.items()}}


def measure(args: list[str], tmp: Path, name: str, nbytes: int, timeout: float) -> dict:
    cache = tmp / f"cache-{name}"
    cold = first_step(args, cache, tmp / f"run-{name}-cold", timeout)
    cached = first_step(args, cache, tmp / f"run-{name}-cached", timeout)
    spent = cold["first_step_s"] - cached["first_step_s"]
    row: dict[str, Any] = {"text_mb": round(nbytes / MB, 1), "cold": cold, "cached": cached}
    row["cold_minus_cached_mb_s"] = round(nbytes / MB / spent, 2) if spent > 0 else None
    return row


TOKENIZE = """
import json, resource, sys, time
from lstmlm.config import DataConfig
from lstmlm.data.dataset import load_dataset
cfg = DataConfig(train=sys.argv[1], level=sys.argv[2])
t0 = time.perf_counter()
data = load_dataset(cfg)
t1 = time.perf_counter()
again = load_dataset(cfg, vocab=data.vocab)
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"new_vocab_s": t1 - t0, "known_vocab_s": t2 - t1, "peak_rss_mb": rss}))
"""


def tokenize_rate(text: Path, level: str, timeout: float) -> dict[str, Any]:
    """Tokenizing alone, in a child process with the cache off (see the module doc)."""
    env = {**os.environ, "LSTMLM_TOKEN_CACHE": "off"}
    out = subprocess.run(
        [sys.executable, "-c", TOKENIZE, str(text), level],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    got = json.loads(out.stdout)
    mb = text.stat().st_size / MB
    return {
        "tokenize_mb_s": round(mb / got["known_vocab_s"], 2),
        "new_vocab_mb_s": round(mb / got["new_vocab_s"], 2),
        "tokenize_peak_rss_mb": got["peak_rss_mb"],
    }


def import_seconds(repeats: int = 3) -> float:
    """The median time of `python -c "import lstmlm.cli.main"`: Python, torch and the CLI."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import lstmlm.cli.main"], check=True)
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--levels", nargs="+", default=["word", "char", "bpe"])
    ap.add_argument("--source", default="wikitext-2/train.txt", help="below ../shared/data")
    ap.add_argument("--workdir", help="where the texts and runs go (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    imports = import_seconds()
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.workdir) as d:
        tmp = Path(d)
        ptb = ["--corpus", "ptb", "--data-dir", str(SHARED)]
        rows.append({"text": "ptb", "level": "word", **measure(ptb, tmp, "ptb", sum(
            (SHARED / "ptb" / f"{s}.txt").stat().st_size for s in ("train", "valid", "test")
        ), a.timeout)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
        for size in a.sizes_mb:
            text = synthesize(SHARED / a.source, size, tmp / f"text-{size}mb.txt")
            for level in a.levels:
                args = ["--train", str(text), "--level", level]
                row = measure(args, tmp, f"{size}-{level}", text.stat().st_size, a.timeout)
                row |= tokenize_rate(text, level, a.timeout)
                rows.append({"text": f"{a.source} x{size} MB", "level": level, **row})
                print(json.dumps(rows[-1]), file=sys.stderr)
            text.unlink()
    for row in rows:  # what the data path costs once Python, torch and lstmlm are loaded
        for run in ("cold", "cached"):
            row[run]["after_import_s"] = round(row[run]["first_step_s"] - imports, 3)
    print(json.dumps({"import_s": imports, "rows": rows, "machine": machine()}))


if __name__ == "__main__":
    main()
