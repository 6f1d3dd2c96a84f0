"""Training speed of lstmlm against the plain reference loop, back to back on this machine.

    python benchmarks/bench_train.py --config medium --corpus ptb --seconds 60 [-- FLAGS]
    python benchmarks/bench_train.py --rnn gru ...   # both sides GRU
    python benchmarks/bench_train.py --device cuda ...   # both sides on the GPU

Runs benchmarks/reference.py (pytorch/examples-style nn.LSTM / nn.GRU fp32 loop) and then
`lstmlm train` with the same model size, recipe and data for the same number of
seconds, and prints one JSON object with both tokens/s, the ratio, valid ppl and
peak RSS of each. Flags after `--` go to lstmlm (e.g. `-- --precision bf16`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import (
    REFERENCE_RECIPE,
    ROOT,
    SHARED,
    lstmlm_cmd,
    machine,
    matmul_flop_per_token,
    peak_flops,
    run_json,
    share_of_peak,
    split_passthrough,
)

SIZES = {"small": 200, "medium": 650}  # hidden = embedding size, two layers
VOCAB = {"ptb": 10_000, "wikitext-2": 33_278}

# The reference presets, spelled as lstmlm flags (same loss, lr, clip, schedule, init).
CONFIGS = {
    "small": [
        "--emb-size",
        "200",
        "--hidden-size",
        "200",
        "--num-layers",
        "2",
        "--dropout",
        "0",
        "--bptt",
        "20",
    ],
    "medium": [
        "--emb-size",
        "650",
        "--hidden-size",
        "650",
        "--num-layers",
        "2",
        "--dropout",
        "0.5",
        "--tie-weights",
        "--bptt",
        "35",
    ],
}


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=CONFIGS, default="medium")
    p.add_argument("--corpus", choices=("ptb", "wikitext-2"), default="ptb")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--rnn", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--device", default="cpu", help="torch device of both sides (default: cpu)")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the CPU's peak")
    args = p.parse_args(argv)
    size, gates = SIZES[args.config], 4 if args.rnn == "lstm" else 3
    flop = matmul_flop_per_token(size, size, VOCAB[args.corpus], 2, train=True, gates=gates)
    peak = peak_flops() if args.device == "cpu" and not args.no_peak else {}

    results: dict[str, object] = {
        "benchmark": "train",
        "config": args.config,
        "corpus": args.corpus,
        "seconds": args.seconds,
        "rnn": args.rnn,
        "device": args.device,
        "lstmlm_flags": extra,
        **machine(),
        "train_mflop_per_token": round(flop / 1e6, 2),
        "peak": peak,
    }
    if not args.skip_reference:
        ref, ref_rss = run_json(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "reference.py"),
                "--preset",
                args.config,
                "--model",
                args.rnn.upper(),
                "--data",
                str(SHARED / args.corpus),
                "--seconds",
                str(args.seconds),
                "--device",
                args.device,
            ]
        )
        results["reference"] = {
            "train_tokens_per_sec": ref["train_tokens_per_sec"],
            "valid_ppl": ref["valid_ppl"],
            "peak_rss_mb": ref_rss,
            "epochs": ref["epochs_completed"],
            "share_of_peak": share_of_peak(ref["train_tokens_per_sec"], flop, peak),
        }
    with tempfile.TemporaryDirectory() as tmp:
        out, rss = run_json(
            lstmlm_cmd(
                "train",
                "--corpus",
                args.corpus,
                "--out",
                str(Path(tmp) / "run"),
                "--json",
                "--quiet",
                "--max-minutes",
                str(args.seconds / 60),
                "--epochs",
                "1000",
                *REFERENCE_RECIPE,
                *CONFIGS[args.config],
                "--rnn",
                args.rnn,
                "--device",
                args.device,
                *extra,
            )
        )
    results["lstmlm"] = {
        "train_tokens_per_sec": out["tokens_per_sec"],
        "valid_ppl": out["valid_ppl"],
        "peak_rss_mb": rss,
        "epochs": out["epochs"],
        "share_of_peak": share_of_peak(out["tokens_per_sec"], flop, peak),
    }
    if "reference" in results:
        results["ratio_train_tokens_per_sec"] = round(
            out["tokens_per_sec"] / results["reference"]["train_tokens_per_sec"], 3
        )
        results["ratio_valid_ppl"] = round(out["valid_ppl"] / results["reference"]["valid_ppl"], 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
