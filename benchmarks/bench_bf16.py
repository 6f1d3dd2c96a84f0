"""bf16 against fp32 after the same training steps, over several seeds.

    python benchmarks/bench_bf16.py [--steps 1500] [--seeds 1111 2 3]
                                    [--schedules constant cosine]

Trains Zaremba's small model (2x200 LSTM, no dropout, SGD lr 20 on the mean loss, clip
0.25, bptt 20, batch 20) on PTB for `--steps` updates, once in fp32 (torch's nn.LSTM)
and once with `--cell manual --precision bf16` (the C kernels), per seed and per lr
schedule:

- `constant`: lr 20 throughout, the check docs/results.md has always quoted;
- `cosine`: the same lr annealed by a cosine to 0.02 over the steps, as `ptb-10min`
  trains (`--lr-schedule cosine`).

At a constant lr 20 the trajectories of two runs part on any rounding difference and
the valid ppl after N steps moves with the last few updates, so fp32 against fp32 on
another seed differs by as much as bf16 against fp32. The annealed runs end where the
noise has been averaged out. Prints one JSON object: every run's valid ppl, each
seed's bf16 / fp32 ratio, their mean, and the spread of fp32 over the seeds (the
yardstick). Run it on an idle machine; 12 runs of 1,500 steps take about 20 minutes here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import lstmlm_cmd, machine, run_json

SMALL = [
    "--corpus", "ptb", "--bptt", "20", "--batch-size", "20", "--emb-size", "200",
    "--hidden-size", "200", "--num-layers", "2", "--dropout", "0", "--lr", "20",
    "--clip", "0.25", "--loss-reduction", "mean", "--eval-batch-size", "10",
]  # fmt: skip
PRECISIONS = {"fp32": [], "bf16": ["--cell", "manual", "--precision", "bf16"]}
SCHEDULES = {
    "constant": ["--lr-schedule", "none"],
    "cosine": ["--lr-schedule", "cosine", "--lr-final", "0.02"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 2, 3])
    p.add_argument("--schedules", nargs="+", choices=sorted(SCHEDULES), default=list(SCHEDULES))
    args = p.parse_args()

    results: dict[str, object] = {"benchmark": "bf16", "steps": args.steps, **machine()}
    for schedule in args.schedules:
        runs: dict[str, dict[int, float]] = {name: {} for name in PRECISIONS}
        for seed in args.seeds:
            for name, flags in PRECISIONS.items():
                with tempfile.TemporaryDirectory() as tmp:
                    out, _ = run_json(
                        lstmlm_cmd(
                            "train",
                            *SMALL,
                            *SCHEDULES[schedule],
                            *flags,
                            "--max-steps",
                            str(args.steps),
                            "--seed",
                            str(seed),
                            "--out",
                            str(Path(tmp) / "run"),
                            "--json",
                            "--quiet",
                        )  # fmt: skip
                    )
                runs[name][seed] = round(out["valid_ppl"], 2)
        ratios = [runs["bf16"][s] / runs["fp32"][s] for s in args.seeds]
        fp32 = list(runs["fp32"].values())
        results[schedule] = {
            "valid_ppl": {name: {str(s): v for s, v in r.items()} for name, r in runs.items()},
            "bf16_over_fp32": [round(r, 4) for r in ratios],
            "mean_bf16_over_fp32": round(statistics.fmean(ratios), 4),
            "fp32_spread_over_seeds": round(max(fp32) / min(fp32), 4),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
