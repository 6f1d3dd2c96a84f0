"""`lstmlm download`: fetch a named corpus, checking its sha256."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lstmlm.cli.progress import ProgressReporter


def add_parser(sub: Any) -> None:
    from lstmlm.data.corpora import CORPORA

    d = sub.add_parser(
        "download",
        help="download a named corpus, checking its sha256",
        description="Download a named corpus into DATA_DIR/CORPUS/ and check every file's "
        "sha256; files already there with the right checksum are kept, and a failed or "
        "interrupted download leaves nothing behind (no temporary file, no empty folder). "
        "wikitext-103, wikitext-103-raw, enwik8 and text8 come as zip archives: the archive "
        "is checked (size and sha256), its splits are extracted to train.txt, valid.txt and "
        "test.txt (enwik8 and text8: the first 90M / next 5M / last 5M bytes, each cut "
        "moved to the next UTF-8 character start) with their sums in SHA256SUMS, and the "
        "archive is deleted. Sizes, levels and sources: docs/data.md. Environment: "
        "LSTMLM_MIRROR=URL tries each file first at URL/CORPUS/FILE (e.g. "
        "URL/ptb/train.txt or URL/enwik8/enwik8.zip; file:// works too), then at the "
        "built-in URLs.",
    )
    d.add_argument("corpus", help=f"the corpus: {', '.join(CORPORA)}")
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


def run(args: argparse.Namespace) -> int:
    from lstmlm.data.corpora import CorpusNotFound, find_corpus
    from lstmlm.data.download import download_corpus

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
    try:  # a failed download leaves nothing behind: download_corpus cleans up
        paths = download_corpus(
            args.corpus,
            args.data_dir,
            progress=bar.bytes_progress,
            extract_progress=lambda done, total: bar.bytes_progress(done, total, "extracting"),
        )
    finally:
        bar.close()
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0
