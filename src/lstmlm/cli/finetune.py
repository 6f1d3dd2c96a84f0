"""`lstmlm finetune`: AWD-LSTM fine-tuning, a run's best weights trained on with averaged
SGD into a new run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lstmlm.cli.progress import ProgressReporter, format_summary


def add_parser(sub: Any) -> None:
    ft = sub.add_parser(
        "finetune",
        help="AWD-LSTM fine-tuning: continue a run's best weights with averaged SGD",
        description="Train a run's best model on with averaged SGD from the start, into a new "
        "run folder, until validation stalls (--nonmono of the run) or --epochs.",
    )
    ft.add_argument("run", help="run folder to fine-tune")
    ft.add_argument("--out", help="new run folder (default: RUN-finetune)")
    ft.add_argument("--epochs", type=int, help="at most this many epochs (default: the run's)")
    ft.add_argument("--lr", type=float, help="learning rate (default: the run's)")
    ft.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this many minutes (default: the run's --max-minutes)",
    )
    ft.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    ft.add_argument("--json", action="store_true", help="print a final JSON summary line")
    ft.add_argument(
        "--quiet", action="store_true", help="no progress bar or per-epoch lines on stderr"
    )
    ft.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lstmlm.training import finetune_run

    reporter = ProgressReporter(quiet=args.quiet)
    out = args.out or str(Path(args.run).with_name(Path(args.run).name + "-finetune"))
    finetune_run(
        args.run,
        out,
        epochs=args.epochs,
        lr=args.lr,
        max_minutes=args.max_minutes,
        overwrite=args.overwrite,
        on_event=reporter,
    )
    reporter.close()
    summary = json.loads((Path(out) / "summary.json").read_text())
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary, "valid"))
        print(format_summary(summary, "test"))
        print(f"run saved in {out}")
    return 0
