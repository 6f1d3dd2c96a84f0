import json
import math
import shutil

import pytest
from conftest import write_corpus

from helpers import tiny_config
from lstmlm.cli.main import main
from lstmlm.config import DataConfig, RunConfig
from lstmlm.reports.plot import choose_metric, plot_runs, read_curves
from lstmlm.storage.curves import Point, value
from lstmlm.training import start_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plot")
    run = tmp / "tiny"
    start_run(tiny_config(write_corpus(tmp / "corpus.txt"), epochs=2), run)
    return run


def test_curves_follow_metrics_jsonl(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    c = read_curves(run_dir)
    assert c.name == "tiny" and c.level == "word"
    progress = [r for r in records if r["event"] == "progress"]
    assert [p.loss for p in c.train] == [r["train_loss"] for r in progress]
    assert [p.epoch for p in c.valid] == [1, 2]
    assert [p.minutes * 60 for p in c.valid] == pytest.approx(
        [r["elapsed"] for r in records if r["event"] == "epoch"]
    )
    xs = [p.epoch for p in c.train]
    assert xs == sorted(xs) and 0 < xs[0] < 1 < xs[-1] <= 2
    thin = read_curves(run_dir, max_points=3)
    assert len(thin.train) == 3 and thin.train[-1] == c.train[-1] and thin.train[0] == c.train[0]


def test_epoch_records_stand_in_for_missing_progress_reports(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["event"] != "progress"]
    (copy / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    epochs = [json.loads(line) for line in kept if json.loads(line)["event"] == "epoch"]
    c = read_curves(copy)
    assert [(p.epoch, p.loss) for p in c.train] == [(r["epoch"], r["train_loss"]) for r in epochs]


def test_torn_last_line_is_skipped(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with (copy / "metrics.jsonl").open("a") as f:
        f.write('{"event": "progress", "epo')
    assert len(read_curves(copy).train) == len(read_curves(run_dir).train)


def test_metric_choice_and_value():
    assert choose_metric(["char", "char"]) == "bpc"
    assert choose_metric(["word", "word"]) == "ppl"
    assert choose_metric(["bpe"], "bpc", with_bpc=[True]) == "bpc"
    assert choose_metric(["char"], "ppl") == "ppl"
    # mixed levels: bits per character when every run recorded them, never perplexity
    assert choose_metric(["word", "char", "bpe"], with_bpc=[True, True, True]) == "bpc"
    with pytest.raises(ValueError, match="a word-level run is word-level and a char-level run"):
        choose_metric(["word", "char"], "ppl", with_bpc=[True, True])
    with pytest.raises(ValueError, match="cannot share an axis"):
        choose_metric(["word", "char"])  # an older word run: no bpc recorded
    with pytest.raises(ValueError, match="w has no bits per character in its records"):
        choose_metric(["word"], "bpc", ["w"])
    with pytest.raises(ValueError, match="unknown metric"):
        choose_metric(["word"], "nats")
    assert value(Point(0, 0, 1.0, 1.5), "bpc") == 1.5
    assert math.isnan(value(Point(0, 0, 1.0), "bpc"))
    assert value(Point(0, 0, 1.0), "ppl") == pytest.approx(math.e)
    assert value(Point(0, 0, 1000.0), "ppl") == float("inf")


def _old_records(run, tmp_path, name):
    """A copy of `run` whose metrics.jsonl is as an older lstmlm wrote it: no bits per
    character at the word level (valid_bpc null, no train_bpc)."""
    copy = tmp_path / name
    shutil.copytree(run, copy)
    lines = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("train_bpc", None)
        r.pop("valid_word_ppl", None)
        if r["event"] == "epoch":
            r["valid_bpc"] = None
        lines.append(json.dumps(r))
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return copy


def test_curves_carry_the_recorded_bits_per_character(run_dir, tmp_path):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    c = read_curves(run_dir)
    progress = [r for r in records if r["event"] == "progress"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert c.has_bpc and [p.bpc for p in c.train] == [r["train_bpc"] for r in progress]
    assert [p.bpc for p in c.valid] == [r["valid_bpc"] for r in epochs]
    # a word run's bpc is its loss per token scaled by the text's tokens per character
    text = json.loads((run_dir / "summary.json").read_text())["text"]["valid"]
    ratio = text["tokens"] / (text["chars"] * math.log(2))
    assert c.valid[0].bpc == pytest.approx(c.valid[0].loss * ratio)
    old = read_curves(_old_records(run_dir, tmp_path, "old"))
    assert not old.has_bpc and old.valid[0].bpc is None
    assert [p.loss for p in old.train] == [p.loss for p in c.train]


def test_plot_writes_a_png(run_dir, tmp_path):
    out = plot_runs([run_dir, run_dir], tmp_path / "curves.png")
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000


def test_cli_plot(run_dir, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["plot", str(run_dir), "-o", str(out), "--metric", "ppl"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "wrote" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_bpc_of_a_word_level_run(run_dir, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert plot_runs([run_dir], out, metric="bpc").read_bytes()[:8] == PNG
    old = _old_records(run_dir, tmp_path, "old")  # recorded no bpc: refused, one line
    out.unlink()
    with pytest.raises(ValueError, match=f"{old} has no bits per character in its records"):
        plot_runs([old], out, metric="bpc")
    assert main(["plot", str(old), "-o", str(out), "--metric", "bpc"]) == 2
    err = capsys.readouterr().err
    assert "use --metric ppl" in err and err.count("\n") == 1
    assert not out.exists()


def test_word_and_char_runs_share_an_axis_in_bits_per_character(run_dir, tmp_path, capsys):
    cfg = tiny_config(write_corpus(tmp_path / "corpus.txt", n_lines=40), epochs=1, max_steps=6)
    char = tmp_path / "char"
    start_run(RunConfig(DataConfig(train=cfg.data.train, level="char"), cfg.model, cfg.train), char)
    assert read_curves(char).level == "char"
    out = tmp_path / "c.png"
    with pytest.raises(ValueError, match=f"{run_dir} is word-level and {char} is char-level"):
        plot_runs([run_dir, char], out, metric="ppl")
    assert main(["plot", str(char), str(run_dir), "-o", str(out), "--metric", "ppl"]) == 2
    assert "--metric bpc" in capsys.readouterr().err
    assert not out.exists()
    for metric in ("auto", "bpc"):  # auto: mixed levels are drawn in bpc
        assert plot_runs([run_dir, char], out, metric=metric).read_bytes()[:8] == PNG
        out.unlink()
    old = _old_records(run_dir, tmp_path, "old")
    for metric in ("auto", "bpc"):
        with pytest.raises(ValueError, match="cannot share an axis"):
            plot_runs([old, char], out, metric=metric)
    assert plot_runs([char, char], out).read_bytes()[:8] == PNG  # one level: drawn in bpc


@pytest.mark.parametrize("records", [None, [], [{"event": "start", "config": {}}]])
def test_a_run_without_training_records_is_refused(run_dir, tmp_path, capsys, records):
    import shutil

    copy = tmp_path / "fresh"
    shutil.copytree(run_dir, copy)
    if records is None:
        (copy / "metrics.jsonl").unlink()
    else:
        (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "c.png"
    with pytest.raises(ValueError, match=f"^{copy} has no training records yet$"):
        plot_runs([run_dir, copy], out)
    assert main(["plot", str(copy), "-o", str(out)]) == 2
    assert "has no training records yet" in capsys.readouterr().err
    assert not out.exists()


def test_plot_prints_the_path_really_written(run_dir, tmp_path, capsys):
    folder = tmp_path / "figs"
    folder.mkdir()
    assert main(["plot", str(run_dir), "-o", str(folder)]) == 0
    written = folder / "curves.png"
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    assert written.read_bytes().startswith(PNG)
    bare = tmp_path / "name"
    assert main(["plot", str(run_dir), "-o", str(bare)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {bare}.png"
    assert (tmp_path / "name.png").read_bytes().startswith(PNG) and not bare.exists()
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "x.v2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write a .v2 image; use one of" in err


def test_curves_of_a_long_metrics_file_are_read_in_bounded_memory(run_dir, tmp_path):
    import shutil
    import tracemalloc

    run = tmp_path / "long"
    shutil.copytree(run_dir, run)
    line = {"event": "progress", "epoch": 1, "steps": 100_000, "elapsed": 1.0, "train_loss": 4.0}
    with (run / "metrics.jsonl").open("a") as f:
        for i in range(40_000):
            f.write(json.dumps({**line, "done": i, "train_loss": 4.0 + i / 1e5}) + "\n")

    def peak(max_points):
        tracemalloc.start()
        c = read_curves(run, max_points)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return c, size

    thin, bounded = peak(50)
    full, unbounded = peak(None)
    assert len(thin.train) == 50 and len(full.train) > 40_000
    assert thin.train[-1] == full.train[-1] and thin.train[0] == full.train[0]
    assert bounded < unbounded / 10  # 200 points held at most, not 40,000
