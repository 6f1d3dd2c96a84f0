"""Small corpora and configs shared by the tests."""

import functools
import hashlib
import random
import socket
import threading
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lstmlm.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lstmlm.data import corpora
from lstmlm.data.readers import read_text, split_text
from lstmlm.data.stats import text_stats
from lstmlm.data.subword import SUBWORD_LEVELS, SubwordVocab, train_tokenizer
from lstmlm.data.tokenize import iter_tokens
from lstmlm.data.vocab import Vocab

# The headless browser the web page tests drive (tests skip when it is missing).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def serving(app: Any, log_level: str = "warning") -> Iterator[str]:
    """Run `app` with uvicorn, set up as `lstmlm serve` sets it up, in a thread on a free
    loopback port; yield its base URL."""
    import uvicorn

    from lstmlm.serving.app import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def tiny_config(train: Path, **train_kw) -> RunConfig:
    tk = dict(
        batch_size=4, bptt=8, epochs=2, lr=5.0, clip=1.0, log_every=5, checkpoint_minutes=0, seed=3
    )
    tk.update(train_kw)
    return RunConfig(
        data=DataConfig(train=str(train)),
        model=ModelConfig(emb_size=16, hidden_size=16, num_layers=1, dropout=0.1),
        train=TrainConfig(**tk),
    )


def write_corpus(path: Path, n_lines: int = 300, seed: int = 0) -> Path:
    """A small word-level text with real structure (a repeating grammar)."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the old man", "she", "he"]
    verbs = ["sees", "likes", "walks to", "finds", "keeps"]
    objects = ["the park", "a ball", "the river", "an apple", "the house", "a book"]
    lines = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}" for _ in range(n_lines)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lowercase_config(train: Path, **train_kw) -> RunConfig:
    """`tiny_config` with `--lowercase`: the run's text is lower-cased before tokenizing."""
    cfg = tiny_config(train, **train_kw)
    return RunConfig(DataConfig(train=str(train), lowercase=True), cfg.model, cfg.train)


def write_mixed_case_corpus(path: Path, n_lines: int = 300, seed: int = 0) -> Path:
    """`write_corpus` with every other line in upper case ("THE CAT SEES A BOOK")."""
    write_corpus(path, n_lines, seed)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = [line.upper() if i % 2 else line for i, line in enumerate(lines)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- a tiny named corpus and a real HTTP server to download it from ---------------------

CONTENT = {
    "tiny/train.txt": b" the cat sat \n on the mat \n",
    "tiny/valid.txt": b" the dog \n",
    "tiny/test.txt": b" a cat \n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def isolate_corpora(tmp_path: Path, monkeypatch: Any) -> None:
    """No real data dirs leak in: an empty cwd, no LSTMLM_DATA / LSTMLM_MIRROR, and the
    ``tiny`` corpus (tiny_spec) registered for the test."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("LSTMLM_DATA", raising=False)
    monkeypatch.delenv("LSTMLM_MIRROR", raising=False)
    monkeypatch.setitem(corpora.CORPORA, "tiny", tiny_spec())


def tiny_spec(urls: dict[str, tuple[str, ...]] | None = None) -> Any:
    from lstmlm.data.corpora import CorpusFile, CorpusSpec

    urls = urls or {}
    files = {
        split: CorpusFile(
            f"tiny/{split}.txt", sha(CONTENT[f"tiny/{split}.txt"]), urls.get(split, ())
        )
        for split in ("train", "valid", "test")
    }
    return CorpusSpec(name="tiny", level="word", files=files, description="test corpus")


def all_files(root: Path) -> list[str]:
    """Every file below `root` (hidden ones too), as sorted relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def write_corpus_files(root: Path, content: dict[str, bytes] = CONTENT) -> None:
    for rel, data in content.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


class Server:
    """A real HTTP server on 127.0.0.1 serving one folder, recording the paths requested.

    `errors[path] = status` answers that path with the HTTP error; `cut[path] = n` sends
    its full Content-Length but only the first n bytes, then closes the connection.
    """

    def __init__(self, folder: Path) -> None:
        requests: list[str] = []
        errors: dict[str, int] = {}
        cut: dict[str, int] = {}

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                requests.append(self.path)
                if self.path in errors:
                    self.send_error(errors[self.path])
                elif self.path in cut:
                    data = (folder / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: cut[self.path]])
                    self.close_connection = True
                else:
                    super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = requests
        self.errors = errors
        self.cut = cut
        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


# --- a tiny archive corpus -----------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes]) -> bytes:
    """A deflated zip archive of `members` at `path`; returns its bytes."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path.read_bytes()


def archive_spec(name: str, level: str, zip_bytes: bytes, urls=(), **archive_kw) -> Any:
    """A corpus spec for the archive `zip_bytes` (its name `NAME.zip`), served at `urls`."""
    from lstmlm.data.archives import CorpusArchive
    from lstmlm.data.corpora import CorpusSpec

    archive = CorpusArchive(
        f"{name}.zip", sha(zip_bytes), len(zip_bytes), tuple(urls), **archive_kw
    )
    return CorpusSpec(name=name, level=level, archive=archive, description="test archive")


# --- the data path before the token cache, the reference the streamed one must equal ---


def old_read_splits(cfg: DataConfig) -> dict[str, str]:
    if cfg.corpus is not None:
        paths = corpora.find_corpus(cfg.corpus, cfg.data_dir)
        texts = {s: read_text(p, lowercase=cfg.lowercase) for s, p in paths.items()}
        if set(texts) == {"train"}:
            return dict(zip(("train", "valid", "test"), split_text(texts["train"]), strict=True))
        return texts
    train = read_text(cfg.train, lowercase=cfg.lowercase)
    if cfg.valid is not None:
        return {
            "train": train,
            "valid": read_text(cfg.valid, lowercase=cfg.lowercase),
            "test": read_text(cfg.test, lowercase=cfg.lowercase),
        }
    return dict(zip(("train", "valid", "test"), split_text(train), strict=True))


def old_load(cfg: DataConfig, level: str, vocab: Vocab | None = None):
    """(vocab, ids per split as lists, stats per split, text digest) as the data path
    made them before the token cache: read whole, tokenized token by token."""
    texts = old_read_splits(cfg)
    if vocab is None:
        if level in SUBWORD_LEVELS:
            vocab = SubwordVocab(train_tokenizer(texts["train"], level, cfg.vocab_size), level)
        else:
            vocab = Vocab.build(iter_tokens(texts["train"], level), cfg.min_freq, cfg.max_vocab)
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        digest.update(texts[split].encode("utf-8", "surrogatepass") + b"\0")
    ids = {}
    for split, text in texts.items():
        if isinstance(vocab, SubwordVocab):
            ids[split] = vocab.encode_text(text).tolist()
        else:
            ids[split] = list(array("q", vocab.iter_ids(iter_tokens(text, level))))
    stats = {s: text_stats(texts[s], level, len(ids[s])) for s in texts}
    return vocab, ids, stats, digest.hexdigest()


def skip_without_bf16_kernels() -> None:
    """Skip unless the C kernels with AVX-512 BF16 run here (else bf16 runs on torch)."""
    import pytest

    from lstmlm.nn.manual import bf16_gemm

    if not bf16_gemm.usable():
        pytest.skip("no C kernels with AVX-512 BF16 here: bf16 runs on torch")


def assert_gradients_align(ours: Any, theirs: Any, params: list[Any]) -> None:
    """The per-row losses `ours` and `theirs` (N,), weighted unevenly over the rows, give
    gradients for each of `params` pointing the same way (cosine > 0.999)."""
    import torch

    weights = torch.linspace(0.5, 2.0, ours.numel())
    for a, c in zip(
        torch.autograd.grad((ours * weights).sum(), params),
        torch.autograd.grad((theirs * weights).sum(), params),
        strict=True,
    ):
        assert torch.nn.functional.cosine_similarity(a.flatten(), c.flatten(), dim=0) > 0.999
