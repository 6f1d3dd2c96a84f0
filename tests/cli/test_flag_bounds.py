"""Values no run can use are one line and exit 2 before any work (#24 item 11)."""

import pytest

from helpers import write_corpus
from lstmlm.cli.main import main
from lstmlm.config import FieldError, ModelConfig, TrainConfig


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--hidden-size", str(10**30)], "--hidden-size must fit in 64 bits"),
        (["--num-layers", str(10**20)], "--num-layers must fit in 64 bits"),
        (["--seed", str(10**23)], "--seed must fit in 64 bits"),
        (["--emb-size", str(10**9)], "--emb-size must be at most 16777216"),
        (["--hidden-sizes", "16", str(10**12)], "--hidden-sizes must be at most 16777216"),
        (["--mogrifier-rounds", "100000"], "--mogrifier-rounds must be at most 64"),
        (["--sample-temperatures", "0.5", "inf"], "--sample-temperatures must be finite"),
    ],
)
def test_train_refuses_before_reading_the_text(tmp_path, capsys, flags, says):
    corpus = write_corpus(tmp_path / "c.txt", n_lines=40)
    run = tmp_path / "run"
    assert main(["train", "--train", str(corpus), "--out", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not run.exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds")
    corpus = write_corpus(tmp / "c.txt", n_lines=60)
    run = tmp / "run"
    flags = "--emb-size 8 --hidden-size 8 --num-layers 1 --batch-size 4 --bptt 8 --epochs 1"
    argv = ["train", "--train", str(corpus), "--out", str(run), "--quiet", *flags.split()]
    assert main(argv) == 0
    return run


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--cache", "--cache-theta", "inf"], "--cache-theta must be a finite number"),
        (["--cache-theta", "nan"], "--cache-theta must be a finite number"),
        (["--dynamic", "--dyn-method", "rms", "--dyn-stats-batches", "-1"], "--dyn-stats-batches"),
        (["--dyn-lr", "inf"], "--dyn-lr must be a finite number"),
        (["--cache-window", str(10**30)], "--cache-window must be at most"),
    ],
)
def test_evaluate_refuses_before_loading(run_dir, capsys, flags, says, monkeypatch):
    import lstmlm.storage.runs as runs

    monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("loaded the run"))
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_python_callers_read_the_field_names():
    with pytest.raises(FieldError, match="^hidden_size must fit in 64 bits"):
        ModelConfig(hidden_size=2**63).validate()
    with pytest.raises(FieldError, match="^mogrifier_rounds must be at most 64, got 65"):
        ModelConfig(mogrifier_rounds=65).validate()
    TrainConfig(seed=2**63 - 1).validate()  # the largest is fine
