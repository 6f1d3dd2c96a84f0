"""The real `lstmlm` command in a subprocess, as a user runs it."""

import argparse
import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import write_corpus, write_mixed_case_corpus
from lstmlm.cli.progress import ProgressReporter

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
    assert set(d) >= {"split", "tokens", "loss", "ppl", "bpc", "word_ppl", "chars", "words"}
    assert d["split"] == "test"
    assert d["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)
    # the raw text's numbers, as the training summary has them (same split, same model)
    for key in ("bpc", "word_ppl", "unk_share"):
        assert d[key] == pytest.approx(summary[f"test_{key}"], rel=1e-6), key
    counts = summary["text"]["test"]
    assert (d["chars"], d["words"]) == (counts["chars"], counts["words"])


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


def test_generate_reads_the_prompt_of_a_lowercase_run_in_lower_case(tmp_path):
    corpus = write_mixed_case_corpus(tmp_path / "c.txt")
    r = lstmlm("train", "--train", corpus, "--out", tmp_path / "run", "--lowercase", *TINY)
    assert r.returncode == 0, r.stderr
    args = ("generate", tmp_path / "run", "--max-new-tokens", "12", "--seed", "1")
    upper = lstmlm(*args, "--prompt", "THE CAT ZEBRA")
    assert upper.returncode == 0, upper.stderr
    assert "1 prompt token(s)" in upper.stderr and "zebra" in upper.stderr  # THE, CAT known
    assert upper.stdout.startswith("THE CAT ZEBRA ")  # the prompt is shown as typed
    lower = lstmlm(*args, "--prompt", "the cat zebra")
    assert upper.stdout[len("THE CAT ZEBRA") :] == lower.stdout[len("the cat zebra") :]


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


# --- help text: in-process, from the parser the command uses ---------------------------


def _subparsers():
    from lstmlm.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _expanded_help(parser, action):
    """An option's help as --help shows it (%(default)s and the like filled in)."""
    return action.help % {**vars(action), "prog": parser.prog}


def test_every_option_has_help_and_shows_its_default():
    subparsers = _subparsers()
    assert set(subparsers) >= {"train", "evaluate", "generate", "download", "serve", "plot"}
    for name, sp in subparsers.items():
        assert sp.description, f"{name} has no description"
        shown = sp.format_help()  # renders: no stray % in any help string
        assert "(default: None)" not in shown, name
        for action in sp._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{where}: no help"
            text = _expanded_help(sp, action)
            assert text.strip(), f"{where}: empty help"
            assert text.count("(default:") <= 1, f"{where}: default shown twice: {text}"
            default = action.default
            if not action.option_strings or default in (None, False, argparse.SUPPRESS):
                continue  # an off switch, or a value the help explains in words if needed
            assert "(default:" in text and str(default) in text, f"{where}: default not shown"


@pytest.mark.parametrize(
    "command,fragments",
    [
        ("evaluate", ["--split", "(default: test)", "--dyn-lr", "(default: 0.001)"]),
        ("generate", ["(default: 100)", "10,000 characters", "(default: a random seed"]),
        ("download", ["LSTMLM_MIRROR", "built-in URLs"]),
        ("plot", ["(default: curves.png)"]),
        ("presets", ["--preset NAME"]),
    ],
)
def test_help_names_defaults_limits_and_environment(command, fragments):
    text = " ".join(_subparsers()[command].format_help().split())  # unwrapped
    for fragment in fragments:
        assert fragment in text, fragment


def test_prompt_limit_in_help_is_the_one_enforced(word_run):
    run, _ = word_run
    assert "at most 10,000 characters" in " ".join(_subparsers()["generate"].format_help().split())
    r = lstmlm("generate", run, "--prompt", "a" * 10_001)
    assert_one_line_error(r, "10,000 characters")


# --- progress display ------------------------------------------------------------------


def _bar_states(text, prefix):
    """Each state a tqdm bar starting with `prefix` was drawn in, in order."""
    parts = (p.strip() for p in text.replace("\r", "\n").split("\n"))
    return [p for p in parts if p.startswith(prefix)]


def _last_position(text, prefix):
    """The last position ("n/total") of the bar whose line starts with `prefix`."""
    return _bar_states(text, prefix)[-1].split("|")[2].split()[0]


def _start_event():
    return {"source": "c.txt", "train_tokens": 1000, "vocab_size": 50, "params": 123}


def _progress_event(step, done, steps):
    return {
        "epoch": 1,
        "step": step,
        "done": done,
        "steps": steps,
        "train_loss": 2.0,
        "train_ppl": 7.4,
        "lr": 20.0,
        "tokens_per_sec": 1000.0,
        "elapsed": 1.0,
    }


class _Stderr:
    """What has been written to sys.stderr so far (pytest's capture of it)."""

    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def getvalue(self):
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys):
    return _Stderr(capsys)


def test_bar_reaches_the_final_step_of_a_run_stopped_before_log_every(stderr):
    r = ProgressReporter()
    r("start", _start_event())
    r("epoch_start", {"epoch": 1, "steps": 100, "done": 0})
    r("final_eval", {"step": 7})  # --max-steps 7 with --log-every 50: no progress event came
    r.close()
    out = stderr.getvalue()
    assert _last_position(out, "epoch 1:") == "7/100", out
    assert "evaluating the best model on valid and test" in out
    assert r.bar is None


def test_bar_after_resume_and_at_epoch_end_and_interrupt(stderr):
    r = ProgressReporter()
    r("resume", {"epoch": 1, "step": 25})
    r("epoch_start", {"epoch": 1, "steps": 100, "done": 25})
    r("final_eval", {"step": 31})
    assert _last_position(stderr.getvalue(), "epoch 1:") == "31/100"

    r("start", _start_event())
    r("epoch_start", {"epoch": 1, "steps": 40, "done": 0})
    r("epoch", {**_progress_event(40, 40, 40), "valid_ppl": 6.0, "valid_bpc": None})
    assert _last_position(stderr.getvalue(), "epoch 1:") == "40/40"
    r("epoch_start", {"epoch": 2, "steps": 40, "done": 0})
    r("progress", _progress_event(60, 20, 40))
    r("interrupted", {"epoch": 2, "step": 63})  # Ctrl-C: an error line follows
    assert _last_position(stderr.getvalue(), "epoch 2:") == "23/40"
    assert r.bar is None


def test_evaluation_bar_shows_no_per_column_unit(stderr):
    r = ProgressReporter()
    for done in (0, 50, 100):
        r.eval_progress(done, 100)
    r.close()
    states = _bar_states(stderr.getvalue(), "evaluating")
    assert states and "50%" in states[-2] and "100%" in states[-1]
    assert "/B" not in stderr.getvalue() and "it/s" not in stderr.getvalue()


def test_quiet_reporter_writes_nothing(stderr):
    r = ProgressReporter(quiet=True)
    r("start", _start_event())
    r("epoch_start", {"epoch": 1, "steps": 10, "done": 0})
    r("progress", _progress_event(5, 5, 10))
    r("final_eval", {"step": 7})
    r.eval_progress(1, 2)
    r.close()
    assert stderr.getvalue() == ""


def test_short_run_bar_ends_at_its_last_step(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    tiny = [a for a in TINY if a != "--quiet"]
    r = lstmlm("train", "--train", corpus, "--out", tmp_path / "run", *tiny, "--max-steps", "5")
    assert r.returncode == 0, r.stderr
    assert _last_position(r.stderr, "epoch 1:").startswith("5/"), r.stderr


# --- generation as Hugging Face users know it -------------------------------------------


def test_generate_alias_flags_equal_the_new_names(word_run):
    run, _ = word_run
    base = ("generate", run, "--prompt", "the cat", "--max-new-tokens", "10", "--seed", "4")
    new = lstmlm(*base, "--num-return-sequences", "2", "--stop-strings", "park")
    old = lstmlm(*base, "--num-samples", "2", "--stop", "park")
    assert new.returncode == 0, new.stderr
    assert new.stdout == old.stdout and new.stdout.count("--- sample") == 2


def test_generate_beams_and_output_scores(word_run):
    run, _ = word_run
    r = lstmlm(
        "generate", run, "--prompt", "the cat", "--max-new-tokens", "5",
        "--num-beams", "3", "--output-scores", "--device", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text, table = r.stdout.split("logprob\tbits\ttoken\n")
    rows = table.strip().split("\n")
    assert text.startswith("the cat ") and len(rows) == 5
    for row in rows:
        logprob, bits, token = row.split("\t")
        assert float(logprob) <= 0 and float(bits) == pytest.approx(
            -float(logprob) / 0.693147, abs=2e-3
        )
        assert token in text or token == "<eos>"
    bad = lstmlm("generate", run, "--num-beams", "2", "--num-return-sequences", "3")
    assert_one_line_error(bad, "--num-return-sequences", "num_beams")


def test_evaluate_and_generate_default_to_the_auto_device_as_train_does():
    from lstmlm.config import TrainConfig

    assert TrainConfig().device == "auto"
    for sub in ("evaluate", "generate"):
        (device,) = [a for a in _subparsers()[sub]._actions if "--device" in a.option_strings]
        assert device.default == "auto", sub


def test_generate_continues_every_prompt_given(word_run):
    run, _ = word_run
    base = ("generate", run, "--max-new-tokens", "6", "--seed", "5", "--device", "cpu")
    both = lstmlm(*base, "--prompt", "the cat", "--prompt", "a dog")
    assert both.returncode == 0, both.stderr
    first, second = (lstmlm(*base, "--prompt", p).stdout for p in ("the cat", "a dog"))
    assert both.stdout == f"=== prompt 1 ===\n{first}=== prompt 2 ===\n{second}"
    r = lstmlm(*base, "--prompt", "the", "--prompt", "a", "--stream")
    assert r.returncode == 2 and "one prompt" in r.stderr


def test_train_shows_unk_share_and_warns_above_five_percent(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    train = [*TINY[: TINY.index("--quiet")], "--max-steps", "2"]
    r = lstmlm("train", "--train", corpus, "--out", tmp_path / "a", *train)
    assert r.returncode == 0, r.stderr
    assert "<unk> is 0.0% of train and 0.0% of valid" in r.stderr
    assert "--level bpe" not in r.stderr
    r = lstmlm("train", "--train", corpus, "--out", tmp_path / "b", "--max-vocab", "6", *train)
    assert r.returncode == 0, r.stderr
    warn = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "<unk>" in warn[0] and "--level bpe" in warn[0]
    shares = []
    for run in ("a", "b"):
        r = lstmlm("evaluate", tmp_path / run, "--split", "valid", "--json")
        assert r.returncode == 0, r.stderr
        shares.append(json.loads(r.stdout)["unk_share"])
    assert shares[0] == 0.0 and shares[1] > 0.05
