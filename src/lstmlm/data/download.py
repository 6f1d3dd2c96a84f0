"""Fetch a named corpus into a data dir: every byte checked, nothing left behind on failure.

A plain file streams into a temporary file next to its target, is checked against its
pinned size and sha256, and is renamed into place. An archive streams into a hidden
staging folder in the data dir, is checked the same way, and is extracted there
(`archives.extract_splits`); the split files and their SHA256SUMS then move into
``DATA_DIR/NAME/`` (one rename when that folder is new) and the archive is deleted. A
failed or interrupted download removes its temporary files, its staging folder and every
folder it created, so the data dir looks as it did (a verified file that arrived before
the failure stays).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from http.client import HTTPException
from pathlib import Path
from urllib.request import Request, urlopen

from lstmlm.data.archives import SPLITS, SUMS, Progress, extract_splits
from lstmlm.data.corpora import (
    CorpusSpec,
    expected_sha256,
    file_sha256,
    get_spec,
    remember_sha256,
)
from lstmlm.files import chmod_like_new

CHUNK = 1 << 20  # download in 1 MB chunks
USER_AGENT = "lstmlm (corpus download)"  # some hosts refuse urllib's default agent

Urls = Mapping[str, tuple[str, ...]]  # relative path (e.g. "ptb/train.txt") -> URLs


def download_corpus(
    name: str,
    data_dir: str | Path,
    *,
    progress: Progress | None = None,
    timeout: float = 60,
    urls: Urls | None = None,
    extract_progress: Progress | None = None,
) -> dict[str, Path]:
    """Download a corpus into ``data_dir`` and return its split files' paths by split.

    Files already there with the right sha256 are kept. For each missing file (or the
    archive of an archive corpus, e.g. ``enwik8/enwik8.zip``) the URLs are tried in order:
    ``$LSTMLM_MIRROR/<relative path>`` if that variable is set, then ``urls[relative
    path]`` if given, else the built-in URLs. ``progress(done, total)`` is called as bytes
    arrive (``total`` is None if unknown), ``extract_progress(done, total)`` as an archive
    is extracted. Failure is a one-line ``ValueError`` and leaves nothing behind.
    """
    spec = get_spec(name)
    root = Path(data_dir)
    made: list[Path] = []  # folders this call created, outermost first
    try:
        if spec.archive is None:
            return _download_files(spec, root, made, urls, progress, timeout)
        return _download_archive(spec, root, made, urls, progress, extract_progress, timeout)
    except BaseException:  # an error or Ctrl-C: no empty folder stays behind
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a verified file that arrived stays
        raise


def _download_files(
    spec: CorpusSpec,
    root: Path,
    made: list[Path],
    urls: Urls | None,
    progress: Progress | None,
    timeout: float,
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for split, f in spec.files.items():
        target = root / f.path
        paths[split] = target
        if target.is_file() and file_sha256(target) == f.sha256:
            continue
        _make_folder(target.parent, made)
        _fetch_any(f.path, f.urls, urls, target, f.sha256, f.size, progress, timeout)
    return paths


def _download_archive(
    spec: CorpusSpec,
    root: Path,
    made: list[Path],
    urls: Urls | None,
    progress: Progress | None,
    extract_progress: Progress | None,
    timeout: float,
) -> dict[str, Path]:
    assert spec.archive is not None
    arc = spec.archive
    paths = {split: root / rel for split, rel in spec.paths.items()}
    if _complete(spec, root, paths):
        return paths
    _make_folder(root, made)
    staging = _staging_folder(root, spec.name)
    try:
        zip_path = staging / arc.file
        rel = f"{spec.name}/{arc.file}"
        _fetch_any(rel, arc.urls, urls, zip_path, arc.sha256, arc.size, progress, timeout)
        folder = root / spec.name
        try:
            sums = extract_splits(zip_path, arc, staging, extract_progress)
            zip_path.unlink()
            _install(staging, folder)
        except OSError as e:
            raise ValueError(f"{folder}: cannot write the corpus ({e.strerror or e})") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already if it became the folder
    for split, path in paths.items():
        remember_sha256(path, sums[split])
    return paths


def _complete(spec: CorpusSpec, root: Path, paths: dict[str, Path]) -> bool:
    """Whether an archive corpus is already in `root`, made from its archive and intact."""
    try:
        expected = expected_sha256(spec, root)
        return all(p.is_file() and file_sha256(p) == expected[s] for s, p in paths.items())
    except ValueError:  # no SHA256SUMS, another archive's, or a file that cannot be read
        return False


def _make_folder(folder: Path, made: list[Path]) -> None:
    """Create `folder` and its missing parents, adding each one created to `made`."""
    missing: list[Path] = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to remove
        except OSError as e:
            raise ValueError(f"{path}: cannot create folder ({e.strerror or e})") from e
        made.append(path)


def _staging_folder(root: Path, name: str) -> Path:
    """A new hidden folder ``root/.NAME.<random>.part`` (a new folder's permission bits,
    unlike mkdtemp's 0700, so that it can become the corpus folder as it is)."""
    while True:
        path = root / f".{name}.{secrets.token_hex(4)}.part"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise ValueError(f"{root}: cannot write there ({e.strerror or e})") from e


def _install(staging: Path, folder: Path) -> None:
    """Move the extracted files into `folder`: the staging folder itself when `folder` is
    new (one atomic rename), else file by file with SHA256SUMS last."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    for name in [f"{split}.txt" for split in SPLITS] + [SUMS]:
        os.replace(staging / name, folder / name)


def _fetch_any(
    rel: str,
    builtin: tuple[str, ...],
    urls: Urls | None,
    target: Path,
    sha256: str,
    size: int | None,
    progress: Progress | None,
    timeout: float,
) -> None:
    """Fetch `rel` from the first of its URLs that gives the right bytes."""
    mirror = os.environ.get("LSTMLM_MIRROR", "").rstrip("/")
    candidates = ([f"{mirror}/{rel}"] if mirror else []) + list(
        urls[rel] if urls is not None and rel in urls else builtin
    )
    errors: list[str] = []
    for url in candidates:
        try:
            _fetch(url, target, sha256, size, progress, timeout)
            return
        except _FetchError as e:
            errors.append(f"{url}: {e}")
    reasons = "; ".join(errors) or "no URL to try"
    raise ValueError(f"could not download {rel} ({reasons})")


class _FetchError(Exception):
    """One URL failed; the next one may work."""


def _fetch(
    url: str,
    target: Path,
    sha256: str,
    size: int | None,
    progress: Progress | None,
    timeout: float,
) -> None:
    """Stream ``url`` into ``target`` via a temp file, checking size and sha256."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        chmod_like_new(fd)  # not mkstemp's 0600
        h = hashlib.sha256()
        done = 0
        request = Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and size is not None and total != size:
                raise _FetchError(f"size is {total} bytes, expected {size}")
            if progress is not None:
                progress(0, total)
            while chunk := resp.read(CHUNK):
                done += len(chunk)
                if size is not None and done > size:
                    raise _FetchError(f"larger than the expected {size} bytes")
                h.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:  # http.client ends a cut body quietly
            raise _FetchError(f"the transfer stopped after {done} of {total} bytes")
        if h.hexdigest() != sha256:
            raise _FetchError("sha256 mismatch (wrong or corrupted content)")
        os.replace(tmp, target)
    # URLError, HTTPError and timeouts are OSErrors; an unknown URL scheme is a ValueError.
    except (OSError, ValueError, HTTPException) as e:
        raise _FetchError(" ".join(str(e).split()) or type(e).__name__) from e
    finally:
        tmp.unlink(missing_ok=True)
    remember_sha256(target, sha256)  # find_corpus need not re-hash it
