"""`lstmlm download`: fetch a named corpus, checking its sha256."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from lstmlm.cli.progress import ProgressReporter


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "download",
        help="download a named corpus, checking its sha256",
        description="Download a named corpus into DATA_DIR/CORPUS/ and check every file's "
        "sha256; files already there with the right checksum are kept, and a failed download "
        "leaves nothing behind. Environment: LSTMLM_MIRROR=URL tries each file first at "
        "URL/CORPUS/FILE (e.g. URL/ptb/train.txt; file:// works too), then at the built-in "
        "URLs.",
    )
    d.add_argument("corpus", help="ptb, ptb-char, wikitext-2 or tinyshakespeare")
    d.add_argument(
        "--data-dir",
        default="data",
        help="where to put it (default: ./data, where `lstmlm train --corpus` looks too)",
    )
    d.add_argument(
        "--if-missing",
        action="store_true",
        help="only when the corpus is in no folder of the search path (--data-dir, "
        "$LSTMLM_DATA, ./data, ../shared/data); otherwise say where it is",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run)


def new_folders(root: Path, corpus: str) -> list[Path]:
    """The folders a download of `corpus` into `root` would create, deepest first."""
    from lstmlm.data.corpora import get_spec

    made: set[Path] = set()
    for f in get_spec(corpus).files.values():
        folder = (root / f.path).parent
        while not folder.exists() and folder not in made:
            made.add(folder)
            if folder.parent == folder:
                break
            folder = folder.parent
    return sorted(made, key=lambda p: len(p.parts), reverse=True)


def run(args: argparse.Namespace) -> int:
    from lstmlm.data.corpora import CorpusNotFound, download_corpus, find_corpus

    if args.if_missing:
        try:
            paths = find_corpus(
                args.corpus, args.data_dir if Path(args.data_dir).is_dir() else None
            )
        except CorpusNotFound:
            pass
        else:
            for split, path in paths.items():
                print(f"{split}: {path} (already there)")
            return 0
    bar = ProgressReporter(quiet=args.quiet)
    made = new_folders(Path(args.data_dir), args.corpus)
    try:
        paths = download_corpus(args.corpus, args.data_dir, progress=bar.bytes_progress)
    except BaseException:  # a failed or interrupted download leaves no empty folder
        bar.close()
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a file that arrived stays
        raise
    bar.close()
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0
