"""A Keras 3 / TensorFlow character LSTM, written the way the Keras examples write one.

    /work/venv-tf/bin/python benchmarks/keras_char_lstm.py --train T --valid V --minutes 10

The Keras side of benchmarks/bench_keras.py, run with the Python of a separate
TensorFlow venv (it imports neither lstmlm nor torch). Model: Embedding(V, 128),
Dropout 0.2, LSTM(128, return_sequences=True), Dropout 0.2, LSTM(128,
return_sequences=True), Dropout 0.2, Dense(V, softmax); RMSprop lr 0.002 (Keras'
defaults otherwise: rho 0.9, no clipping); sparse categorical cross-entropy.

Data: the characters of the training file (the newline is one of them) cut into
non-overlapping windows of `--seq-len` (input text[i:i+50], target text[i+1:i+51], so
every character after the first is a target once per epoch), shuffled by `fit` each
epoch, batches of `--batch-size` (the windows are trimmed to whole batches). The model
is stateless: each window starts from a zero state. A callback stops `fit` once
`--minutes` have passed since the first training batch began; training tokens/s is
the predicted target characters over that time (the first batch, which traces the
graph, included; its time is also reported alone).

Validation: `model.evaluate` over the non-overlapping windows of 50 of the valid text
(a last partial window is dropped), state reset per window; bits per character =
mean NLL / ln 2. Characters not seen in train map to one extra <unk> class.

Prints one JSON object on stdout (TensorFlow's own logging goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` have passed since the first batch began."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.t0: float | None = None
        self.t_end = 0.0
        self.first_batch = 0.0
        self.batches = 0
        self.last_loss = math.nan

    def on_train_batch_begin(self, batch, logs=None):
        if self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.t_end = time.perf_counter()
        self.batches += 1
        if self.batches == 1:
            self.first_batch = self.t_end - self.t0
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
        if self.t_end - self.t0 >= self.seconds:
            self.model.stop_training = True

    @property
    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else self.t_end - self.t0


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (inputs, next-character targets) windows of seq_len."""
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return x, y


def build_model(vocab: int, args: argparse.Namespace) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(args.seq_len,), dtype="int32"),
            keras.layers.Embedding(vocab, args.emb_size),
            keras.layers.Dropout(args.dropout),
            keras.layers.LSTM(args.hidden_size, return_sequences=True),
            keras.layers.Dropout(args.dropout),
            keras.layers.LSTM(args.hidden_size, return_sequences=True),
            keras.layers.Dropout(args.dropout),
            keras.layers.Dense(vocab, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=args.lr),
        loss="sparse_categorical_crossentropy",
    )
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--valid", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow inter-op threads")
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--eval-batch-size", type=int, default=250)
    p.add_argument("--emb-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=0.002)
    args = p.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    keras.utils.set_random_seed(args.seed)

    train_text = args.train.read_text(encoding="utf-8")
    valid_text = args.valid.read_text(encoding="utf-8")
    chars = sorted(set(train_text))
    index = {c: i for i, c in enumerate(chars)}
    unk = len(chars)
    vocab = len(chars) + 1

    def encode(text: str) -> np.ndarray:
        return np.array([index.get(c, unk) for c in text], dtype=np.int32)

    x, y = windows(encode(train_text), args.seq_len)
    per_epoch = len(x) // args.batch_size
    x, y = x[: per_epoch * args.batch_size], y[: per_epoch * args.batch_size]
    valid_ids = encode(valid_text)
    xv, yv = windows(valid_ids, args.seq_len)

    model = build_model(vocab, args)
    budget = TimeBudget(args.minutes * 60)
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=10**6,  # the time budget stops it
        shuffle=True,
        verbose=0,
        callbacks=[budget],
    )
    tokens = budget.batches * args.batch_size * args.seq_len

    t0 = time.perf_counter()
    valid = model.evaluate(xv, yv, batch_size=args.eval_batch_size, verbose=0, return_dict=True)
    eval_seconds = time.perf_counter() - t0
    valid_loss = float(valid["loss"])

    print(
        json.dumps(
            {
                "impl": "keras",
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
                "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "jit_compile": bool(model.jit_compile),
                "vocab_size": vocab,
                "params": int(model.count_params()),
                "seq_len": args.seq_len,
                "batch_size": args.batch_size,
                "train_chars": len(train_text),
                "batches": budget.batches,
                "batches_per_epoch": per_epoch,
                "epochs": round(budget.batches / per_epoch, 4),
                "train_tokens": tokens,
                "train_seconds": budget.elapsed,
                "first_batch_seconds": budget.first_batch,
                "train_tokens_per_sec": tokens / budget.elapsed if budget.elapsed > 0 else 0.0,
                "train_loss_epoch_mean": budget.last_loss,  # Keras: running mean over the epoch
                "valid_tokens": int(yv.size),
                "valid_unk": int((valid_ids == unk).sum()),
                "valid_loss": valid_loss,
                "valid_bpc": valid_loss / math.log(2),
                "eval_seconds": eval_seconds,
                "eval_tokens_per_sec": yv.size / eval_seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
