"""Micro-timings behind two design choices, on this machine; prints one JSON object.

    python benchmarks/bench_ops.py [--repeats 30]

1. Dropout masks: `torch.nn.functional.dropout` (one `bernoulli_` draw per element)
   against `lstmlm.nn.regularize.dropout` (masks from 16-bit random numbers, four per
   64-bit draw), on a medium-size activation (35, 20, 650), p = 0.5.
2. Inference through a hand-written LSTM layer: `ManualLSTM` with gradients (the
   training path: window projection, Python time loop saving for BPTT) against the
   same layer without gradients (torch's fused LSTM kernel), bf16, at lstmlm's
   evaluation shapes (T, B, H) = (100, 32, 650) and the small model's (70, 10, 200).

Median milliseconds of --repeats calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import machine, median_seconds

from lstmlm.nn.manual import ManualLSTM
from lstmlm.nn.regularize import dropout


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    return round(1e3 * median_seconds(fn, repeats), 3)


def dropout_timings(repeats: int) -> dict[str, float]:
    x = torch.randn(35, 20, 650)
    return {
        "torch_dropout_ms": _median_ms(lambda: F.dropout(x, 0.5, True), repeats),
        "lstmlm_dropout_ms": _median_ms(lambda: dropout(x, 0.5, True), repeats),
    }


def _lstm_pair(T: int, B: int, H: int, repeats: int) -> dict[str, float]:
    layer = ManualLSTM(H, H, precision="bf16")
    x = torch.randn(T, B, H)
    x_grad = x.clone().requires_grad_()

    def no_grad() -> None:
        with torch.inference_mode():
            layer(x)

    return {
        "with_grad_ms": _median_ms(lambda: layer(x_grad), repeats),
        "without_grad_ms": _median_ms(no_grad, repeats),
    }


def lstm_timings(repeats: int) -> dict[str, dict[str, float]]:
    shapes = ((100, 32, 650), (70, 10, 200))
    return {f"{T}x{B}x{H}": _lstm_pair(T, B, H, repeats) for T, B, H in shapes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    if args.repeats < 1:
        raise SystemExit("bad arguments: --repeats must be >= 1")
    results = {
        "benchmark": "ops",
        **machine(),
        "dropout_35x20x650": dropout_timings(args.repeats),
        "manual_lstm_forward_bf16": lstm_timings(args.repeats),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
