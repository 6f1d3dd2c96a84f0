"""keep_freed_memory: freed blocks stay in the process (no trim, no per-block mmap)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocates 200 blocks of 1 MB, frees them, and prints whether the settings were applied,
# the RSS growth while they lived and what of it is still held after the free (MB).
PROBE = """
import sys, torch
from lstmlm.training.allocator import keep_freed_memory
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
kept = keep_freed_memory() if sys.argv[1] == "1" else False
base = rss_mb()
blocks = [torch.ones(250_000) for _ in range(200)]
full = rss_mb()
del blocks
print(kept, round(full - base), round(rss_mb() - base))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def _probe(keep: bool, env: dict[str, str] | None = None) -> tuple[str, int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | (env or {})
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if keep else "0"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.split()  # fmt: skip
    return out[0], int(out[1]), int(out[2])


@glibc
def test_freed_blocks_stay_in_the_process_only_when_kept() -> None:
    kept, grown, held = _probe(keep=True)
    assert kept == "True" and grown >= 150 and held >= 0.9 * grown
    kept, grown, held = _probe(keep=False)
    assert kept == "False" and grown >= 150 and held <= 0.1 * grown  # glibc gave it back


@glibc
def test_a_users_malloc_environment_wins() -> None:
    kept, _, _ = _probe(keep=True, env={"MALLOC_ARENA_MAX": "2"})
    assert kept == "False"
