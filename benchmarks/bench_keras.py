"""Character LSTM outside PyTorch: lstmlm's char-rmsprop against a Keras 3 / TensorFlow-CPU peer.

    python benchmarks/bench_keras.py [--minutes 10] [--text PATH] [--seed 1]
                                     [--keras-python /work/venv-tf/bin/python]

Splits the text (default: Tiny Shakespeare) 90/5/5 by lines into train/valid/test files
in a temporary folder, then trains on them for the same number of minutes, one after
the other:

  keras   benchmarks/keras_char_lstm.py, run with `--keras-python` (a separate venv with
          tensorflow-cpu; not a dependency of lstmlm): Embedding, 2 x 128 LSTM, dropout
          0.2, RMSprop lr 0.002, stateless windows of 50 characters, batch 50, trained
          sequence-to-sequence (each window's 50 inputs predict the 50 next characters,
          softmax over the characters, sparse categorical cross-entropy). A callback stops
          `fit` when the budget has passed since the first training batch began.
  lstmlm  `lstmlm train --preset char-rmsprop --train T --valid V --test X --level char
          --max-minutes M` (2x128, dropout 0.2, RMSprop lr 0.002, bptt 50, batch 50, bf16
          matmuls in the hand-written LSTM; it
          also clips at 5, decays the lr after epoch 10 and carries the state across
          windows, as char-rnn does). Its budget counts training steps only.

Reported for each: training tokens/s (predicted target characters per second of
training time, evaluation excluded) and validation bits per character (NLL / ln 2 per
character, the newline counted as a character). The two validations differ in one way:
Keras scores non-overlapping windows of 50 with the state reset per window (via
`model.evaluate`), lstmlm scores the text in columns whose state it carries across its
evaluation windows (and reports its best checkpoint, i.e. lowest validation loss of the
epoch ends and the end). TensorFlow runs with as many intra-op threads as torch uses
here (2 on a 2-vCPU machine) and 1 inter-op thread. Prints one JSON object with both
sides, the ratios (lstmlm / keras tokens/s; bpc difference lstmlm - keras), the budget
and the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import ROOT, SHARED, lstmlm_cmd, machine, run_json

KERAS_SCRIPT = ROOT / "benchmarks" / "keras_char_lstm.py"
DEFAULT_TEXT = SHARED / "tinyshakespeare" / "input.txt"
DEFAULT_KERAS_PYTHON = Path("/work/venv-tf/bin/python")


def split_lines(text: str, fractions: tuple[float, float] = (0.9, 0.05)) -> tuple[str, ...]:
    """Contiguous (train, valid, test) parts by lines; the parts join back to `text`."""
    lines = text.splitlines(keepends=True)
    n = len(lines)
    if n < 3:
        raise SystemExit(f"the text has {n} line(s); need at least 3 to split it")
    a = min(max(round(n * fractions[0]), 1), n - 2)
    b = min(max(round(n * (fractions[0] + fractions[1])), a + 1), n - 1)
    return "".join(lines[:a]), "".join(lines[a:b]), "".join(lines[b:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of each side")
    p.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="UTF-8 text to split 90/5/5")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--keras-python",
        type=Path,
        default=DEFAULT_KERAS_PYTHON,
        help="python of a venv with tensorflow-cpu (default: %(default)s)",
    )
    args = p.parse_args()
    if not args.keras_python.exists():
        raise SystemExit(
            f"{args.keras_python} not found: create it with `python3 -m venv /work/venv-tf && "
            "/work/venv-tf/bin/pip install tensorflow-cpu`, or pass --keras-python"
        )
    threads = torch.get_num_threads()  # what the lstmlm child will use too

    results: dict[str, object] = {
        "benchmark": "keras",
        "text": str(args.text),
        "minutes": args.minutes,
        "seed": args.seed,
        **machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        parts = split_lines(args.text.read_text(encoding="utf-8"))
        names = ("train", "valid", "test")
        files = [Path(tmp) / f"{name}.txt" for name in names]
        for f, part in zip(files, parts, strict=True):
            f.write_text(part, encoding="utf-8")
        results["split_chars"] = {n: len(part) for n, part in zip(names, parts, strict=True)}

        keras, keras_rss = run_json(
            [
                str(args.keras_python),
                str(KERAS_SCRIPT),
                "--train", str(files[0]),
                "--valid", str(files[1]),
                "--minutes", str(args.minutes),
                "--seed", str(args.seed),
                "--threads", str(threads),
                "--inter-op-threads", "1",
            ]
        )  # fmt: skip
        out, rss = run_json(
            lstmlm_cmd(
                "train",
                "--preset", "char-rmsprop",
                "--train", str(files[0]),
                "--valid", str(files[1]),
                "--test", str(files[2]),
                "--level", "char",
                "--out", str(Path(tmp) / "run"),
                "--max-minutes", str(args.minutes),
                "--epochs", "100000",  # the time budget stops it
                "--seed", str(args.seed),
                "--json",
                "--quiet",
            )
        )  # fmt: skip
    keras.pop("impl")
    results["tensorflow"] = keras.pop("tensorflow")
    results["keras_version"] = keras.pop("keras")
    results["tf_intra_op_threads"] = keras.pop("tf_intra_op_threads")
    results["tf_inter_op_threads"] = keras.pop("tf_inter_op_threads")
    results["keras"] = {**keras, "peak_rss_mb": keras_rss}
    results["lstmlm"] = {
        "train_tokens_per_sec": out["tokens_per_sec"],
        "train_seconds": out["seconds"],
        "valid_bpc": out["valid_bpc"],
        "test_bpc": out["test_bpc"],
        "epochs": out["epochs"],
        "steps": out["steps"],
        "stopped": out["stopped"],
        "peak_rss_mb": rss,
    }
    results["ratio_train_tokens_per_sec"] = round(
        out["tokens_per_sec"] / keras["train_tokens_per_sec"], 3
    )
    results["valid_bpc_diff"] = round(out["valid_bpc"] - keras["valid_bpc"], 4)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
