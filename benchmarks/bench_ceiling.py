"""How fast could a bf16 medium model go here at all? Two bounds against the reference.

    python benchmarks/bench_ceiling.py [--seconds 60] [--corpus ptb] [--repeats 15]

Times, on this machine and in this run, every matrix product that one training step
(forward + backward) and one evaluation window of the medium model (2x650 tied LSTM,
10k vocabulary) must do, at their exact shapes, in bf16 (the precision of lstmlm's fast
path) and in fp32:

  train (batch 20, bptt 35, per layer): input projection, its two gradients, the
  gradient of W_hh (all (700 x 650 x 2600)), 35 recurrent steps forward and 35 backward
  ((20 x 650 x 2600), weight packed as lstmlm packs it); decoder forward, d_x and d_W
  ((700 x 650 x 10000)).
  eval (batch 32, bptt 100, lstmlm's evaluation defaults): the forward products only.

The sum is the step time if everything that is not a matmul cost nothing: the
*measured-GEMM floor*, a bound at today's matmul speed. The second bound is the
*peak-FLOP limit*: the same FLOPs (79.6 MFLOP per training token, 26.5 per evaluated
one) at this CPU's bf16 peak, measured by peak_flops.c from its own vector and AMX tile
instructions and clock under load (not a datasheet figure), printed with the CPU model.
It then runs
benchmarks/reference.py (the plain fp32 nn.LSTM loop) for --seconds on the same machine
and prints one JSON object with both tokens/s and the ratio: the highest train / eval
speed-up over the reference that bf16 matmuls at this machine's speed allow. Compare
the ratios of bench_train.py and bench_eval.py against it.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import (
    SHARED,
    machine,
    matmul_flop_per_token,
    median_seconds,
    peak_flops,
    reference_cmd,
    run_json,
)

from lstmlm.nn.manual.common import step_linear

H, V = 650, 10_000
G = 4 * H  # LSTM gates


def _mm(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """Seconds for one (m, k) @ (k, n) product."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return median_seconds(lambda: a @ b, repeats)


def _recurrent(batch: int, steps: int, dtype: torch.dtype, repeats: int) -> float:
    """Seconds for `steps` products (batch, H) x (H, 4H) with the weight packed once."""
    w, h = torch.randn(G, H), torch.randn(batch, H)

    def run() -> None:
        rec = step_linear(w, batch, dtype)  # lstmlm's per-window packing
        for _ in range(steps):
            rec(h)

    return median_seconds(run, max(3, repeats // 3))


def floor_seconds(dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Matmul-only seconds of one training step (700 tokens) and one eval window (3200)."""
    n_train, n_eval = 35 * 20, 100 * 32
    window = _mm(n_train, H, G, dtype, repeats)  # projection; d_x, d_W_ih, d_W_hh alike
    recurrent = _recurrent(20, 35, dtype, repeats)
    decoder = _mm(n_train, H, V, dtype, repeats)  # forward; d_x and d_W alike
    train = 2 * (4 * window + 2 * recurrent) + 3 * decoder  # two layers, one decoder
    evaluation = 2 * (_mm(n_eval, H, G, dtype, repeats) + _recurrent(32, 100, dtype, repeats))
    evaluation += _mm(n_eval, H, V, dtype, repeats)
    return {
        "train_step_seconds": train,
        "train_tokens_per_sec": n_train / train,
        "eval_window_seconds": evaluation,
        "eval_tokens_per_sec": n_eval / evaluation,
    }


def peak_limit() -> dict[str, object]:
    """Tokens/s of the medium model's matmul FLOPs at this CPU's measured bf16 peak."""
    peak = peak_flops()
    if "error" in peak:
        return peak
    gflops = peak["bf16_peak_gflops_all"]
    train = matmul_flop_per_token(H, H, V, 2, train=True)
    evaluation = matmul_flop_per_token(H, H, V, 2, train=False)
    return {
        **peak,
        "train_mflop_per_token": round(train / 1e6, 2),
        "eval_mflop_per_token": round(evaluation / 1e6, 2),
        "train_tokens_per_sec": round(gflops * 1e9 / train, 1),
        "eval_tokens_per_sec": round(gflops * 1e9 / evaluation, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60, help="reference training budget")
    p.add_argument("--corpus", choices=("ptb", "wikitext-2"), default="ptb")
    p.add_argument("--repeats", type=int, default=15, help="timings per product (median)")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()
    if args.repeats < 1 or args.seconds <= 0:
        raise SystemExit("bad arguments: --repeats must be >= 1 and --seconds > 0")

    results: dict[str, object] = {"benchmark": "ceiling", "config": "medium", **machine()}
    bf16 = floor_seconds(torch.bfloat16, args.repeats)
    fp32 = floor_seconds(torch.float32, args.repeats)
    results["matmul_floor_bf16"] = {k: round(v, 4) for k, v in bf16.items()}
    results["matmul_floor_fp32"] = {k: round(v, 4) for k, v in fp32.items()}
    limit = peak_limit()
    results["peak_flop_limit"] = limit
    if not args.skip_reference:
        data = str(SHARED / args.corpus)
        ref, _ = run_json(
            reference_cmd("--preset", "medium", "--data", data, "--seconds", str(args.seconds))
        )
        train, evaluation = ref["train_tokens_per_sec"], ref["eval_tokens_per_sec"]
        results["reference"] = {"train_tokens_per_sec": train, "eval_tokens_per_sec": evaluation}
        results["ceiling_ratio_train"] = round(bf16["train_tokens_per_sec"] / train, 3)
        results["ceiling_ratio_eval"] = round(bf16["eval_tokens_per_sec"] / evaluation, 3)
        if "train_tokens_per_sec" in limit:
            results["peak_ratio_train"] = round(limit["train_tokens_per_sec"] / train, 3)
            results["peak_ratio_eval"] = round(limit["eval_tokens_per_sec"] / evaluation, 3)
        # How much of fp32's own matmul floor the reference reaches (its efficiency).
        results["reference_share_of_fp32_floor"] = round(train / fp32["train_tokens_per_sec"], 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
