"""WikiText-2: lstmlm's adaptive softmax against the full-softmax reference loop, same updates.

    python benchmarks/bench_wt2.py --config medium --steps 1000 [-- FLAGS]

Runs benchmarks/reference.py (pytorch/examples-style loop: nn.LSTM fp32, full softmax over
the 33k-word vocabulary) and then `lstmlm train --softmax adaptive --cutoffs 2000 10000
--precision bf16 --cell manual` with the same model size, recipe (SGD lr 20 on the mean
loss, clip 0.25, dropout, init, batch, bptt) and data, both for exactly --steps updates.
Prints one JSON object: train tokens/s of each and their ratio, the valid ppl of each
after those updates (exact for the adaptive softmax: full log-probabilities over the
vocabulary) and their ratio, and peak RSS. Flags after `--` go to lstmlm and win over
the defaults above (e.g. `-- --cell fused`).

Both models are untied: an adaptive softmax has no vocabulary-by-embedding matrix to
share with the embedding, so the reference is run untied as well (it is tied in the
`medium` preset of bench_train.py).

--valid-lines K scores only the first K lines of valid/test (smoke tests; the corpus
files are read in place, only the shortened valid/test go to a temporary folder).
Time on 2 cores: the reference trains ~700 tokens per update at a few hundred tokens/s
on WT2, so --steps 1000 is about half an hour for it alone, plus the evaluations.
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
    run_json,
    split_passthrough,
)

# The model sizes, untied, spelled for each side.
REFERENCE = {
    "small": ["--emsize", "200", "--nhid", "200", "--nlayers", "2", "--dropout", "0",
              "--bptt", "20"],
    "medium": ["--emsize", "650", "--nhid", "650", "--nlayers", "2", "--dropout", "0.5",
               "--bptt", "35"],
}  # fmt: skip
LSTMLM = {
    "small": ["--emb-size", "200", "--hidden-size", "200", "--num-layers", "2",
              "--dropout", "0", "--bptt", "20"],
    "medium": ["--emb-size", "650", "--hidden-size", "650", "--num-layers", "2",
               "--dropout", "0.5", "--bptt", "35"],
}  # fmt: skip
FAST = ["--softmax", "adaptive", "--cutoffs", "2000", "10000", "--div-value", "2",
        "--precision", "bf16",
        "--cell", "manual"]  # fmt: skip


def data_folder(src: Path, tmp: Path, valid_lines: int | None) -> Path:
    """`src` itself, or a folder with train.txt linked and valid/test cut to K lines."""
    if valid_lines is None:
        return src
    out = tmp / "data"
    out.mkdir()
    (out / "train.txt").symlink_to((src / "train.txt").resolve())
    for split in ("valid", "test"):
        with open(src / f"{split}.txt", encoding="utf-8") as f:
            head = [line for _, line in zip(range(valid_lines), f, strict=False)]
        (out / f"{split}.txt").write_text("".join(head), encoding="utf-8")
    return out


def main() -> None:
    argv, extra = split_passthrough(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(LSTMLM), default="medium")
    p.add_argument("--data", type=Path, default=SHARED / "wikitext-2")
    p.add_argument("--steps", type=int, default=1000, help="updates for each side")
    p.add_argument("--valid-lines", type=int, default=None, help="score only K valid/test lines")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--seed", type=int, default=1111, help="for both sides (init, dropout)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be positive")
    if args.valid_lines is not None and args.valid_lines < 2:
        p.error("--valid-lines must be at least 2")

    flags = [*FAST, *extra]
    results: dict[str, object] = {
        "benchmark": "wt2_adaptive_softmax",
        "config": args.config,
        "tied": False,
        "data": str(args.data),
        "steps": args.steps,
        "seed": args.seed,
        "valid_lines": args.valid_lines,
        "lstmlm_flags": flags,
        **machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = data_folder(args.data, Path(tmp), args.valid_lines)
        if not args.skip_reference:
            ref, ref_rss = run_json(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "reference.py"),
                    "--data",
                    str(data),
                    *REFERENCE[args.config],
                    "--batch-size",
                    "20",
                    "--lr",
                    "20",
                    "--clip",
                    "0.25",
                    "--max-steps",
                    str(args.steps),
                    "--seed",
                    str(args.seed),
                ]
            )
            results["reference"] = {
                "train_tokens_per_sec": ref["train_tokens_per_sec"],
                "valid_ppl": ref["valid_ppl"],
                "steps": ref["steps"],
                "vocab_size": ref["config"]["vocab_size"],
                "peak_rss_mb": ref_rss,
            }
        out, rss = run_json(
            lstmlm_cmd(
                "train",
                "--train",
                str(data / "train.txt"),
                "--valid",
                str(data / "valid.txt"),
                "--test",
                str(data / "test.txt"),
                "--out",
                str(Path(tmp) / "run"),
                "--json",
                "--quiet",
                "--max-steps",
                str(args.steps),
                "--epochs",
                "1000",
                *REFERENCE_RECIPE,
                "--seed",
                str(args.seed),
                *LSTMLM[args.config],
                *flags,
            )
        )
    results["lstmlm"] = {
        "train_tokens_per_sec": out["tokens_per_sec"],
        "valid_ppl": out["valid_ppl"],
        "steps": out["steps"],
        "peak_rss_mb": rss,
    }
    if "reference" in results:
        ref_out = results["reference"]
        assert isinstance(ref_out, dict)
        results["same_updates"] = ref_out["steps"] == out["steps"] == args.steps
        results["ratio_train_tokens_per_sec"] = round(
            out["tokens_per_sec"] / ref_out["train_tokens_per_sec"], 3
        )
        results["ratio_valid_ppl"] = round(out["valid_ppl"] / ref_out["valid_ppl"], 4)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
