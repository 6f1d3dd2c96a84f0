"""`lstmlm presets`: list the named training recipes."""

from __future__ import annotations

import argparse
from typing import Any

from lstmlm.config import PRESETS


def add_parser(sub: Any) -> None:
    pr = sub.add_parser(
        "presets",
        help="list the named recipes",
        description="List the named training recipes for `lstmlm train --preset NAME` "
        "(also `lstmlm compare --base-preset NAME`). A preset sets data, model and training "
        "flags; flags given with it override its values. Comparison presets: "
        "`lstmlm compare --list`.",
    )
    pr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name, p in PRESETS.items():
        print(f"{name:17s} {p.description}")
    return 0
