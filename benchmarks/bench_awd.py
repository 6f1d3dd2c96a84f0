"""Plain dropout vs AWD-LSTM regularization at the same model size, same epochs, same data.

Trains, on this machine in one run:
  reference  benchmarks/reference.py (pytorch/examples-style nn.LSTM loop, plain dropout,
             SGD, lr/4 on plateau), as a subprocess with its own flags;
  awd        lstmlm with the regularization and optimization of an AWD preset
             (embedding / locked dropout, weight drop, AR/TAR, variable BPTT, NT-ASGD),
             with the reference's sizes, batch, bptt and epochs.
Both read the same PTB subset (the first --max-train-tokens of train.txt, full valid and
test, written to a temporary folder) and the same vocabulary (every word of the subset's
train/valid/test, as reference.py builds it). Prints one JSON object with both results.

    .venv/bin/python benchmarks/bench_awd.py --max-train-tokens 200000 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ptb"


def write_subset(src: Path, dst: Path, max_train_tokens: int | None) -> int:
    """Copy valid/test and the first lines of train (with <eos>, >= max tokens) to dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        (dst / f"{split}.txt").write_text((src / f"{split}.txt").read_text("utf-8"), "utf-8")
    lines, tokens = [], 0
    with open(src / "train.txt", encoding="utf-8") as f:
        for line in f:
            if max_train_tokens is not None and tokens >= max_train_tokens:
                break
            lines.append(line)
            tokens += len(line.split()) + 1
    (dst / "train.txt").write_text("".join(lines), "utf-8")
    return tokens


def run_reference(args: argparse.Namespace, data: Path) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "reference.py"),
        "--data", str(data),
        "--emsize", str(args.emsize),
        "--nhid", str(args.nhid),
        "--nlayers", str(args.nlayers),
        "--dropout", str(args.dropout),
        "--lr", str(args.lr),
        "--clip", str(args.clip),
        "--bptt", str(args.bptt),
        "--batch-size", str(args.batch_size),
        "--epochs", str(args.epochs),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.tied:
        cmd.append("--tied")
    if args.seconds is not None:
        cmd += ["--seconds", str(args.seconds)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"reference.py failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def run_awd(args: argparse.Namespace, data: Path) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from lstmlm.config import DataConfig, RunConfig, preset_config, replace
    from lstmlm.data.dataset import load_dataset
    from lstmlm.data.tokenize import tokenize
    from lstmlm.data.vocab import Vocab
    from lstmlm.training import Loop, Trainer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    preset = preset_config(args.awd_preset)
    model = replace(
        preset.model,
        emb_size=args.emsize,
        hidden_size=args.nhid,
        num_layers=args.nlayers,
        hidden_sizes=None,
        tie_weights=args.tied,
    )
    train = {
        "epochs": args.epochs,
        "bptt": args.bptt,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "max_minutes": None if args.seconds is None else args.seconds / 60,
        "checkpoint_minutes": 0.0,
        "log_every": 10**9,
    }
    if args.awd_lr is not None:
        train["lr"] = args.awd_lr
    cfg = RunConfig(
        DataConfig(
            train=str(data / "train.txt"),
            valid=str(data / "valid.txt"),
            test=str(data / "test.txt"),
        ),
        model,
        replace(preset.train, **train),
        args.awd_preset,
    ).validate()
    words = []
    for split in ("train", "valid", "test"):
        words += tokenize((data / f"{split}.txt").read_text("utf-8"), "word")
    vocab = Vocab.build(words)
    dataset = load_dataset(cfg.data, level="word", vocab=vocab)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(Path(run_dir), cfg, dataset)
        r = Loop(trainer).run()
        switched = trainer.st.averaging
    return {
        "impl": "lstmlm-awd",
        "preset": args.awd_preset,
        "config": cfg.to_dict(),
        "vocab_size": len(vocab),
        "params": trainer.model.num_parameters(),
        "train_tokens_per_sec": r.tokens_per_sec,
        "epochs_completed": round(r.epochs, 4),
        "train_seconds": r.seconds,
        "stopped": r.stopped,
        "asgd_switched": switched,
        "valid_ppl": r.valid.ppl,
        "test_ppl": r.test.ppl,
        "wall_seconds": time.perf_counter() - t0,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with PTB *.txt")
    p.add_argument("--max-train-tokens", type=int, default=200_000, help="0 = all of train")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=None, help="training budget per model")
    p.add_argument("--emsize", type=int, default=200)
    p.add_argument("--nhid", type=int, default=200)
    p.add_argument("--nlayers", type=int, default=2)
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dropout", type=float, default=0.2, help="reference's plain dropout")
    p.add_argument("--lr", type=float, default=20.0, help="reference's lr")
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--awd-preset", default="awd-ptb-cpu", help="regularization/optimizer recipe")
    p.add_argument("--awd-lr", type=float, default=None, help="default: the preset's")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.tied and args.emsize != args.nhid:
        raise SystemExit("--tied needs --emsize == --nhid (reference.py has no projection)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ptb-subset"
        n = write_subset(args.data, data, args.max_train_tokens or None)
        reference = run_reference(args, data)
        awd = run_awd(args, data)
    out = {
        "benchmark": "awd_vs_reference",
        "train_tokens": n,
        "epochs": args.epochs,
        "seconds_budget": args.seconds,
        "reference_valid_ppl": reference["valid_ppl"],
        "awd_valid_ppl": awd["valid_ppl"],
        "reference_test_ppl": reference["test_ppl"],
        "awd_test_ppl": awd["test_ppl"],
        "reference": reference,
        "awd": awd,
        "torch_version": torch.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
