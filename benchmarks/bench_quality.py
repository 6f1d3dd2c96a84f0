"""Perplexity after a fixed training-time budget: lstmlm presets against the reference loop.

    python benchmarks/bench_quality.py --seconds 600 --presets small ptb-10min [--seed N]
                                       [-- extra lstmlm flags for every preset]

Runs, back to back on this machine, benchmarks/reference.py with its `small` recipe
(pytorch/examples-style nn.LSTM fp32 loop: 2x200, lr 20 on the mean loss, clip 0.25,
bptt 20, batch 20, lr/4 when validation worsens) and then `lstmlm train --preset P` for
each preset, every one with the same budget of training seconds (evaluation is not
counted by either), on the same corpus. Both score valid and test with 10 evaluation
columns, so the perplexities are computed the same way. Prints one JSON object with
each run's valid/test ppl, tokens/s, epochs and peak RSS, and each preset's valid ppl as
a ratio to the reference's. `--seed` seeds both sides (default: each one's own default,
1111 for the reference and lstmlm's for the presets); flags after `--` go to every
lstmlm run (a candidate recipe: `-- --hidden-size 300 --dropout 0.2`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import SHARED, lstmlm_cmd, machine, reference_cmd, run_json, split_passthrough


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600, help="training seconds per run")
    p.add_argument("--presets", nargs="+", default=["small", "ptb-10min"])
    p.add_argument("--corpus", default="ptb")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--keep", type=Path, help="keep the run folders here (KEEP/PRESET)")
    p.add_argument("--seed", type=int, help="seed of both sides (default: each one's own)")
    argv, extra = split_passthrough(sys.argv[1:])
    args = p.parse_args(argv)
    seed = [] if args.seed is None else ["--seed", str(args.seed)]

    results: dict[str, object] = {
        "benchmark": "quality",
        "corpus": args.corpus,
        "seconds": args.seconds,
        "seed": args.seed,
        "lstmlm_flags": extra,
        **machine(),
    }
    ref_valid = None
    if not args.skip_reference:
        data = str(SHARED / args.corpus)
        ref, rss = run_json(
            reference_cmd(
                "--preset", "small", "--data", data, "--seconds", str(args.seconds), *seed
            )  # fmt: skip
        )
        ref_valid = ref["valid_ppl"]
        results["reference_small"] = {
            "valid_ppl": ref["valid_ppl"],
            "test_ppl": ref["test_ppl"],
            "train_tokens_per_sec": ref["train_tokens_per_sec"],
            "epochs": ref["epochs_completed"],
            "peak_rss_mb": rss,
        }
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = (args.keep or Path(tmp)) / preset
            out, rss = run_json(
                lstmlm_cmd(
                    "train",
                    "--corpus",
                    args.corpus,
                    "--preset",
                    preset,
                    "--max-minutes",
                    str(args.seconds / 60),
                    "--eval-batch-size",
                    "10",
                    "--out",
                    str(run_dir),
                    "--json",
                    "--quiet",
                    "--overwrite",
                    *seed,
                    *extra,
                )
            )
        entry = {
            "valid_ppl": out["valid_ppl"],
            "test_ppl": out["test_ppl"],
            "train_tokens_per_sec": out["tokens_per_sec"],
            "epochs": out["epochs"],
            "peak_rss_mb": rss,
        }
        if ref_valid is not None:
            entry["valid_ppl_ratio_to_reference"] = round(out["valid_ppl"] / ref_valid, 3)
        results[f"lstmlm_{preset}"] = entry
    print(json.dumps(results))


if __name__ == "__main__":
    main()
