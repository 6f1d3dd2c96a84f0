"""Run files changed or damaged after training are refused with one line, never loaded
silently and never a traceback: checksummed checkpoint metadata, a fingerprinted
vocabulary, damaged headers, config.json with wrong types, odd metrics.jsonl lines."""

import json
import logging
import shutil
import struct
from pathlib import Path

import pytest

from helpers import write_corpus
from lstmlm import storage
from lstmlm.cli.main import main
from lstmlm.config import FieldError, RunConfig
from lstmlm.serving.models import load_models
from lstmlm.storage.curves import read_curves

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(tmp / "c.txt", n_lines=80)
    run = tmp / "run"
    assert (
        main(
            [
                "train",
                "--train",
                str(corpus),
                "--out",
                str(run),
                *TINY,
                "--max-steps",
                "4",
                "--log-every",
                "1",
            ]
        )
        == 0
    )
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def cli(capsys, *argv) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


def one_line(rc, lines, *fragments):
    assert rc == 2 and len(lines) == 1 and "error: " in lines[0], lines
    for f in fragments:
        assert f in lines[0], lines[0]


def header_of(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: object, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("field", ["lr", "offset", "step"])
def test_an_edited_trainer_state_is_refused(run, capsys, field):
    raw = (run / storage.LAST).read_bytes()
    header, _ = header_of(run / storage.LAST)
    trainer = json.loads(header["__metadata__"]["lstmlm"])["trainer"]
    old = f'\\"{field}\\": {json.dumps(trainer[field])}'.encode()
    new = old[:-1] + (b"7" if old[-1:] != b"7" else b"8")  # same length: the header stays put
    assert old in raw
    (run / storage.LAST).write_bytes(raw.replace(old, new, 1))  # the trainer's, first
    rc, lines = cli(capsys, "train", "--resume", run, "--max-steps", "8")
    one_line(rc, lines, str(run / storage.LAST), "metadata", "checksum")


def test_a_deleted_metadata_checksum_is_refused(run, capsys):
    header, data = header_of(run / storage.LAST)
    del header["__metadata__"]["meta_crc32"]
    write_header(run / storage.LAST, header, data)
    rc, lines = cli(capsys, "train", "--resume", run, "--max-steps", "8")
    one_line(rc, lines, "has no checksum")


def test_a_file_from_before_metadata_checksums_loads_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="lstmlm"):
        storage.load_tensors(FIXTURES / "run-0.1.0" / storage.LAST)
    assert any("older lstmlm" in r.getMessage() for r in caplog.records)


def test_a_reordered_vocabulary_is_refused(run, capsys):
    vocab = json.loads((run / storage.VOCAB).read_text())
    vocab["itos"][2], vocab["itos"][3] = vocab["itos"][3], vocab["itos"][2]
    (run / storage.VOCAB).write_text(json.dumps(vocab))  # valid JSON, same size
    for argv in (["evaluate", run], ["generate", run], ["train", "--resume", run]):
        rc, lines = cli(capsys, *argv)
        one_line(rc, lines, str(run / storage.VOCAB), "changed since the run was trained")


DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize("bad", ["null", "5", '"x"', DEEP, '{"a": 5}', '{"__metadata__": 3}'])
def test_a_damaged_checkpoint_header_is_one_line(run, capsys, bad):
    _, data = header_of(run / storage.BEST)
    text = bad.encode()
    (run / storage.BEST).write_bytes(struct.pack("<Q", len(text)) + text + data)
    for argv in (["evaluate", run], ["generate", run, "--max-new-tokens", "3"]):
        rc, lines = cli(capsys, *argv)
        one_line(rc, lines, str(run / storage.BEST))
    with pytest.raises(ValueError, match="best.safetensors"):
        load_models([run])  # what `lstmlm serve` loads


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda c: c.update(run=[]), "JSON object"),
        (lambda c: c["run"]["train"].update(lr="fast"), "lr must be a number"),
        (lambda c: c["run"]["model"].update(num_layers=1e9), "num_layers must be an integer"),
        (lambda c: c["run"]["train"].update(precision="fp8"), "precision must be one of"),
        (lambda c: c["run"]["data"].update(lowercase="yes"), "lowercase must be true or false"),
        (lambda c: c["run"].update(model=[1]), "model section must be a JSON object"),
        (lambda c: c.update(level=5), "level must be a string"),
    ],
)
def test_a_damaged_config_is_one_line(run, capsys, change, fragment):
    config = json.loads((run / storage.CONFIG).read_text())
    change(config)
    (run / storage.CONFIG).write_text(json.dumps(config))
    for argv in (["evaluate", run], ["generate", run], ["train", "--resume", run]):
        rc, lines = cli(capsys, *argv)
        one_line(rc, lines, fragment)


def test_from_dict_checks_types_with_field_errors():
    with pytest.raises(FieldError) as e:
        RunConfig.from_dict({"data": {"train": "x.txt"}, "train": {"batch_size": "8"}})
    assert e.value.field == "batch_size"
    with pytest.raises(FieldError):
        RunConfig.from_dict({"data": {"train": "x.txt"}, "model": {"num_layers": 0}})


def test_odd_metrics_lines_are_skipped_by_plot_and_curves(run, capsys, tmp_path):
    good = read_curves(run)
    with (run / storage.METRICS).open("a") as f:
        f.write(DEEP + "\n")
        f.write('{"event": "epoch", "epoch": {"a": 1}, "elapsed": [], "valid_loss": "x"}\n')
        f.write('{"event": "progress", "done": true, "steps": 1, "epoch": 1}\n')
        f.write('{"event": "epoch", "epoch": 1, "elap')  # torn last line
    assert read_curves(run) == good
    rc, lines = cli(capsys, "plot", run, "-o", tmp_path / "c.png")
    assert rc == 0, lines
