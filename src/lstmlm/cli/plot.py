"""`lstmlm plot`: draw the training curves of runs into an image."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    pl = sub.add_parser(
        "plot",
        help="draw training curves of runs into an image",
        description="Draw the training (lines) and validation (markers) curves of runs, "
        "against epochs and minutes, into one image.",
    )
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    pl.add_argument(
        "-o",
        "--output",
        default="curves.png",
        help="image file (.png, .svg, .pdf) (default: %(default)s)",
    )
    pl.add_argument(
        "--metric",
        choices=("auto", "ppl", "bpc"),
        default="auto",
        help="ppl: perplexity per token, for runs of one level; bpc: bits per character of "
        "the raw text, for any levels (a word or subword run trained before lstmlm recorded "
        "it has none); auto: bpc for character or mixed levels, else ppl (default: "
        "%(default)s)",
    )
    pl.add_argument("--title", help="figure title (default: none)")
    pl.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lstmlm.reports.plot import plot_runs

    out = plot_runs(args.runs, args.output, metric=args.metric, title=args.title)
    print(f"wrote {out}")
    return 0
