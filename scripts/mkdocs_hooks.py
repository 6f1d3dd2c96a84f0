"""mkdocs hooks for the docs site (`mkdocs build --strict`, run by scripts/test.sh).

- cli.md is written from the parsers themselves (`lstmlm.cli.main.build_parser`): every
  subcommand's `--help`, so the reference cannot fall behind the flags.
- RELIABILITY.md and benchmarks/RESULTS.md live beside the code (where the tests and
  benchmarks are); they are brought into the site as reliability.md and results-log.md,
  and links to them from docs/ pages point at those pages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
BROUGHT_IN = {  # repository file -> page of the site
    "RELIABILITY.md": "reliability.md",
    "benchmarks/RESULTS.md": "results-log.md",
}
LINKS = {"../RELIABILITY.md": "reliability.md", "../benchmarks/RESULTS.md": "results-log.md"}


def cli_reference() -> str:
    """Markdown: each subcommand's --help, as the command prints it (100 columns)."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width
    from lstmlm.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = [
        "# Command line reference\n",
        "Generated from the parsers by the docs build: each block is what "
        "`lstmlm COMMAND --help` prints.\n",
        f"```text\n{parser.format_help()}```\n",
    ]
    for name, p in sub.choices.items():
        parts.append(f"## lstmlm {name}\n\n```text\n{p.format_help()}```\n")
    return "\n".join(parts)


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    for source, page in BROUGHT_IN.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        text = text.replace("](docs/", "](")  # links written from the repository root
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for link, target in LINKS.items():
        markdown = markdown.replace(f"]({link})", f"]({target})")
    return markdown
