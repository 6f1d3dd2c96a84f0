"""The C step kernels against the same loop on torch ops: one layer's forward + backward.

    python benchmarks/bench_native.py [--rounds 5] [--steps 10]

For each hand-written layer (ManualLSTM, ManualGRU), size (T, B, H) and precision, times
a forward and backward over one window with the kernels on and off (``LSTMLM_NATIVE``),
alternating the two in one process so that load from elsewhere hits both alike, and
prints one JSON object with the median milliseconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from common import machine

import lstmlm.nn.manual.native as native
from lstmlm.nn.manual import ManualGRU, ManualLSTM

LAYERS = {"lstm": ManualLSTM, "gru": ManualGRU}
SHAPES = [(35, 20, 650), (20, 20, 200)]  # (T, B, H): the medium and small presets


def _use_kernels(on: bool) -> None:
    os.environ[native.ENV_SWITCH] = "1" if on else "0"
    native.step_kernels.cache_clear()


def _ms_per_step(layer: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    for _ in range(2):  # warm-up: oneDNN packing, allocator
        layer(x)[0].sum().backward()
    start = time.perf_counter()
    for _ in range(steps):
        layer(x)[0].sum().backward()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="alternations of the two paths")
    p.add_argument("--steps", type=int, default=10, help="windows timed per turn")
    args = p.parse_args()
    _use_kernels(True)
    if native.step_kernels() is None:
        raise SystemExit(
            "bench_native: the C kernels did not build here (see lstmlm.nn.manual.native)"
        )
    results: dict[str, object] = {"benchmark": "native", **machine(), "cases": []}
    for kind, cls in LAYERS.items():
        for T, B, H in SHAPES:
            for precision in ("bf16", "fp32"):
                torch.manual_seed(0)
                layer = cls(H, H, precision=precision)
                x = torch.randn(T, B, H, requires_grad=True)
                times: dict[bool, list[float]] = {True: [], False: []}
                for _ in range(args.rounds):
                    for on in (False, True):
                        _use_kernels(on)
                        times[on].append(_ms_per_step(layer, x, args.steps))
                torch_ms, native_ms = (statistics.median(times[on]) for on in (False, True))
                results["cases"].append(
                    {
                        "layer": kind,
                        "T": T,
                        "B": B,
                        "H": H,
                        "precision": precision,
                        "torch_ops_ms": round(torch_ms, 2),
                        "native_ms": round(native_ms, 2),
                        "speedup": round(torch_ms / native_ms, 3),
                    }
                )
    _use_kernels(True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
