"""The real `lstmlm` command in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import write_corpus

TINY = [
    "--emb-size",
    "16",
    "--hidden-size",
    "16",
    "--num-layers",
    "1",
    "--batch-size",
    "4",
    "--bptt",
    "8",
    "--epochs",
    "1",
    "--quiet",
]


def lstmlm(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lstmlm", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(d / "c.txt")
    r = lstmlm("train", "--train", corpus, "--out", d / "run", "--json", *TINY)
    assert r.returncode == 0, r.stderr
    return d / "run", json.loads(r.stdout.strip().splitlines()[-1])


def test_train_json_summary(word_run):
    _, summary = word_run
    for key in ("valid_ppl", "test_ppl", "epochs", "tokens_per_sec", "seconds"):
        assert key in summary
    assert summary["epochs"] == 1 and summary["valid_ppl"] > 1


def test_evaluate_json(word_run):
    run, summary = word_run
    r = lstmlm("evaluate", run, "--split", "test", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"split", "tokens", "loss", "ppl", "bpc"}
    assert d["split"] == "test" and d["bpc"] is None
    assert d["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)


def test_generate_same_seed_same_text_and_unknown_warning(word_run):
    run, _ = word_run
    args = (
        "generate",
        run,
        "--prompt",
        "the cat zebra",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--seed",
        "1",
    )
    a, b = lstmlm(*args), lstmlm(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.startswith("the cat zebra")
    assert "zebra" in a.stderr and "<unk>" in a.stderr


def test_char_level_reports_bpc(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=120)
    r = lstmlm(
        "train", "--train", corpus, "--level", "char", "--out", tmp_path / "run", "--json", *TINY
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["valid_bpc"] > 0 and d["test_bpc"] > 0


def test_manual_cell_without_a_compiler_warns_once_and_trains(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "LSTMLM_CACHE": str(tmp_path)}
    env.pop("LSTMLM_NATIVE", None)
    args = ("train", "--train", corpus, "--cell", "manual", "--json", *TINY)
    r = lstmlm(*args, "--out", tmp_path / "run", env=env)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("lstmlm: warning:")]
    assert len(warnings) == 1 and "C step kernels unavailable" in warnings[0], r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["valid_ppl"] > 0
    env["LSTMLM_NATIVE"] = "0"  # switched off on purpose: nothing to warn about
    r = lstmlm(*args, "--out", tmp_path / "run2", env=env)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_train_on_epub(tmp_path):
    book = tmp_path / "book.epub"
    chapter = (
        "<html><body>"
        + "".join(f"<p>the cat sees the dog number {i % 7}</p>" for i in range(200))
        + "</body></html>"
    )
    with zipfile.ZipFile(book, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" '
            'media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        z.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package version="2.0" '
            'xmlns="http://www.idpf.org/2007/opf"><manifest><item id="c1" href="c1.xhtml"'
            ' media-type="application/xhtml+xml"/></manifest><spine><itemref idref="c1"/>'
            "</spine></package>",
        )
        z.writestr("OEBPS/c1.xhtml", chapter)
    r = lstmlm(
        "train", "--train", book, "--level", "word", "--out", tmp_path / "run", "--json", *TINY
    )
    assert r.returncode == 0, r.stderr
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())["itos"]
    assert "cat" in vocab and "<p>" not in vocab


def test_presets_listed():
    r = lstmlm("presets")
    assert r.returncode == 0
    for name in ("small", "medium", "large", "char-small", "char-rmsprop"):
        assert name in r.stdout


@pytest.mark.parametrize(
    "make,fragments",
    [
        (lambda d: ["--train", d / "missing.txt"], ["missing.txt"]),
        (lambda d: ["--train", _write(d / "empty.txt", b"")], ["empty.txt"]),
        (lambda d: ["--train", _write(d / "bin.txt", b"\x00\x01\x02abc" * 50)], ["bin.txt"]),
        (
            lambda d: [
                "--train",
                _write(d / "latin.txt", "caf\xe9 au lait\n".encode("latin-1") * 50),
            ],
            ["latin.txt", "UTF-8"],
        ),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--preset", "nope"], ["nope"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--hidden-size", "-5"], ["hidden-size"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--lr", "nan"], ["lr"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--dropout", "1.5"], ["dropout"]),
        (lambda d: ["--corpus", "no-such-corpus"], ["no-such-corpus"]),
        (lambda d: ["--corpus", "ptb", "--data-dir", d, "--bogus-flag"], ["bogus-flag"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--emb-size", "0"], ["emb-size"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--bptt", "-5"], ["bptt"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--max-minutes", "0"], ["max-minutes"]),
        (lambda d: ["--train", write_corpus(d / "c.txt"), "--epochs", "0"], ["epochs"]),
        (
            lambda d: ["--train", write_corpus(d / "c.txt", n_lines=20), "--batch-size", "5000"],
            ["too few for batch size 5000"],
        ),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(tmp_path, make, fragments):
    r = lstmlm("train", *TINY, *make(tmp_path), "--out", tmp_path / "out")
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "out" / "config.json").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_not_a_run_folder_is_one_line(tmp_path):
    assert_one_line_error(lstmlm("evaluate", tmp_path), "not an lstmlm run folder")
    assert_one_line_error(lstmlm("generate", tmp_path / "nope"), "no such run folder")


def test_existing_run_is_not_overwritten(word_run, tmp_path):
    run, _ = word_run
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = lstmlm("train", "--train", write_corpus(tmp_path / "c.txt"), "--out", run, *TINY)
    assert_one_line_error(r, "already holds a run")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_bad_generate_flags(word_run):
    run, _ = word_run
    assert_one_line_error(lstmlm("generate", run, "--max-new-tokens", "0"), "max-new-tokens")
    assert_one_line_error(lstmlm("generate", run, "--temperature", "-1"), "temperature")


def test_help_explains_every_subcommand():
    for sub in ("train", "evaluate", "generate", "presets", "download"):
        r = lstmlm(sub, "--help")
        assert r.returncode == 0 and "usage" in r.stdout
    assert "--tie-weights" in lstmlm("train", "--help").stdout
