"""`lstmlm train --config FILE` and `--print-config`, in process as the CLI runs them."""

import json

import pytest

from helpers import write_corpus
from lstmlm import storage
from lstmlm.cli.main import main

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()


def _run_config(run):
    return json.loads((run / storage.CONFIG).read_text())["run"]


def test_print_config_round_trips_and_trains_the_same_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt")
    flags = ["--train", str(corpus), *TINY, "--epochs", "1", "--lr", "7"]
    assert main(["train", *flags, "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(printed)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed  # loadable again, to the same config
    assert main(["train", *flags, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "b")]) == 0
    assert _run_config(tmp_path / "a") == _run_config(tmp_path / "b")


def test_flags_override_the_file_and_a_run_config_starts_a_new_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt")
    (tmp_path / "c.yaml").write_text(
        f"data:\n  train: {corpus}\nmodel:\n  emb_size: 16\n  hidden_size: 16\n  num_layers: 1\n"
        "train:\n  batch_size: 4\n  bptt: 8\n  epochs: 2\n  lr: 3.0\n"
    )
    argv = ["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 0
    x = _run_config(tmp_path / "x")
    assert x["train"]["epochs"] == 1 and x["train"]["lr"] == 3.0  # flag over file over default
    # A run's own config.json is a config file: the new run has the same config.
    y_argv = ["train", "--config", str(tmp_path / "x" / storage.CONFIG), "--quiet"]
    assert main([*y_argv, "--out", str(tmp_path / "y")]) == 0
    assert _run_config(tmp_path / "y") == x


def test_a_corpus_runs_level_is_printed(tmp_path, capsys):
    assert main(["train", "--corpus", "ptb-char", "--preset", "char-small", "--print-config"]) == 0
    assert "level: symbols" in capsys.readouterr().out  # the corpus's own, written in


def test_a_corpus_runs_config_names_the_level_it_trained_at(tmp_path, capsys):
    """ptb-char trains at its own level (symbols) when none is asked for; RUN/config.json
    says so, so that `--config RUN/config.json` trains at that level too (it said word)."""
    run = tmp_path / "r"
    argv = ["train", "--corpus", "ptb-char", "--preset", "char-small", *TINY]
    assert main([*argv, "--max-steps", "1", "--out", str(run)]) == 0
    assert _run_config(run)["data"]["level"] == "symbols"
    capsys.readouterr()
    assert main(["train", "--config", str(run / storage.CONFIG), "--print-config"]) == 0
    assert "level: symbols" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "small"], "names its own preset"),
        (["--resume", "RUN"], "--resume continues a run with its own config"),
    ],
)
def test_config_with_preset_or_resume_is_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 1\n")
    extra = [str(tmp_path) if e == "RUN" else e for e in extra]
    assert (
        main(["train", "--config", str(tmp_path / "c.yaml"), *extra, "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_bad_value_in_the_file_names_the_flag(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("data:\n  corpus: ptb\ntrain:\n  lr: -1\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--print-config"]) == 2
    assert "lstmlm: error: --lr must be a positive number, got -1" in capsys.readouterr().err
