"""`lstmlm compare`: train several variants on one corpus under one budget; write a report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lstmlm.cli.flags import add_config_flags, config_overrides, level_asked
from lstmlm.cli.progress import NUMBERS_HELP, ProgressReporter
from lstmlm.config import to_flags


def add_parser(sub: Any) -> None:
    cp = sub.add_parser(
        "compare",
        help="train several variants on one corpus under one budget; write a report",
        description="Train each variant (a comparison preset's, and --variant ones) into "
        "OUT/runs/NAME, then write OUT/report.md, OUT/results.json and OUT/valid_ppl.png. "
        "Config flags apply to every variant; their defaults shown are those used without "
        "a preset. Variants may set the token level and vocabulary (--variant "
        "bpe:level=bpe,vocab-size=4000), each building its own; the text is shared. The "
        "report ranks the variants on validation bits per character (bpc), which compares "
        "levels.",
        epilog=NUMBERS_HELP,
    )
    cp.add_argument("--preset", help="comparison preset (see --list)")
    cp.add_argument(
        "--variant",
        action="append",
        metavar="NAME:FLAG=VALUE,...",
        help="an extra variant: a name and config overrides, e.g. gru2:rnn=gru,hidden-size=300 "
        "(tuples join values with '+'); repeat for several",
    )
    cp.add_argument(
        "--base-preset",
        help="run preset the shared config starts from (see `lstmlm presets`) (default: the "
        "comparison preset's, else none)",
    )
    cp.add_argument("--out", help="report folder to write (required unless --list)")
    cp.add_argument("--overwrite", action="store_true", help="retrain variants already in --out")
    cp.add_argument(
        "--reuse", action="store_true", help="keep finished runs of the same config in --out"
    )
    cp.add_argument("--list", action="store_true", help="list the comparison presets and exit")
    cp.add_argument("--json", action="store_true", help="print results.json as one line")
    cp.add_argument("--quiet", action="store_true", help="no progress output")
    add_config_flags(cp)
    cp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lstmlm.reports import variants
    from lstmlm.reports.compare import run_comparison
    from lstmlm.reports.report import format_table

    if args.list:
        for name, c in variants.COMPARISONS.items():
            print(f"{name:18s} {c.description}")
            print(f"{'':18s} variants: {'; '.join(variants.variant_spec(v) for v in c.variants)}")
        return 0
    if not args.out:
        raise ValueError("give --out REPORT_DIR")
    comparison = variants.get_comparison(args.preset) if args.preset else None
    extra = [variants.parse_variant(s) for s in args.variant or ()]
    common = config_overrides(args)
    base, configs = variants.plan(comparison, extra, common, args.base_preset)
    command = " ".join(
        ["lstmlm compare"]
        + ([f"--preset {args.preset}"] if args.preset else [])
        + ([f"--base-preset {args.base_preset}"] if args.base_preset else [])
        + [f"--variant {variants.variant_spec(v)}" for v in extra]
        + to_flags(common)
        + [f"--out {args.out}"]
    )
    reporter = ProgressReporter(quiet=args.quiet)

    def on_event(kind: str, d: dict[str, Any]) -> None:
        if kind == "variant":
            reporter.close()
            if not args.quiet:
                what = "reusing finished run" if d["reused"] else "training"
                print(
                    f"=== variant {d['index']}/{d['total']}: {d['name']} ({d['label']}), "
                    f"{what} in {d['run_dir']} ===",
                    file=sys.stderr,
                )
        else:
            reporter(kind, d)

    result = run_comparison(
        base,
        configs,
        args.out,
        name=args.preset,
        description=comparison.description if comparison else "",
        command=command,
        level=level_asked(args, base),
        overwrite=args.overwrite,
        reuse=args.reuse,
        on_event=on_event,
    )
    reporter.close()
    if args.json:
        print(json.dumps(json.loads(result.results.read_text("utf-8"))))
    else:
        print(format_table(result.variants), end="")
        print(f"report in {result.report}" + (f", plot {result.plot}" if result.plot else ""))
    return 0
