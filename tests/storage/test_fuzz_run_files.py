"""Random damage in every file of a tiny real run (checkpoint headers and metadata,
config.json, vocab.json, metrics.jsonl): every entry point that reads a run (evaluate,
generate, train --resume, the server's loader, plot) answers or refuses with one line
and exit 2, never a traceback, and never changes a checkpoint.

Derandomized (the same examples every run), so a failure here is reproducible."""

import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import write_corpus
from lstmlm import storage
from lstmlm.cli.main import main
from lstmlm.serving.models import load_models

TINY = "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --quiet".split()
FILES = (storage.LAST, storage.BEST, storage.CONFIG, storage.VOCAB, storage.METRICS)
FUZZ = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz")
    corpus = write_corpus(tmp / "c.txt", n_lines=80)
    run = tmp / "run"
    args = [
        "--train",
        str(corpus),
        "--out",
        str(run),
        *TINY,
        "--max-steps",
        "3",
        "--log-every",
        "1",
    ]
    assert main(["train", *args]) == 0
    return run


def _json_paths(value, prefix=()):
    """Every path (a tuple of keys/indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:5]):
            yield from _json_paths(v, (*prefix, i))


def _set(value, path, new):
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


def damage(data, path: Path) -> None:
    """Write one random damage into `path`, chosen by `data`."""
    raw = path.read_bytes()
    kind = data.draw(st.sampled_from(["bytes", "truncate", "json", "header"]))
    if path.suffix == ".safetensors":
        (n,) = struct.unpack("<Q", raw[:8])
        header, body = json.loads(raw[8 : 8 + n]), raw[8 + n :]
        if kind == "json":  # a value of the header or of its metadata's JSON changed
            meta = header["__metadata__"]
            key = data.draw(st.sampled_from(sorted(meta)))
            inner = json.loads(meta[key])
            where = data.draw(st.sampled_from(list(_json_paths(inner))))
            meta[key] = json.dumps(_set(inner, where, data.draw(json_values)))
            text = json.dumps(header).encode()
            raw = struct.pack("<Q", len(text)) + text + body
        elif kind == "header":  # the whole header replaced
            text = json.dumps(data.draw(json_values)).encode()
            raw = struct.pack("<Q", len(text)) + text + body
        else:
            raw = _bytes(data, raw, kind, limit=8 + n)
    elif kind in ("json", "header") and path.suffix == ".json":
        value = json.loads(raw)
        where = data.draw(st.sampled_from(list(_json_paths(value))))
        raw = json.dumps(_set(value, where, data.draw(json_values))).encode()
    else:
        raw = _bytes(data, raw, kind, limit=len(raw))
    path.write_bytes(raw)


def _bytes(data, raw: bytes, kind: str, limit: int) -> bytes:
    if kind == "truncate":
        return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, max(limit - 1, 0)))
        out[at] = data.draw(st.integers(0, 255))
    return bytes(out)


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


@FUZZ
@given(data=st.data())
def test_damaged_run_files_are_one_line_never_a_traceback(trained, capsys, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(trained, Path(tmp) / "run"))
        for name in data.draw(
            st.lists(st.sampled_from(FILES), min_size=1, max_size=2, unique=True)
        ):
            damage(data, run / name)
        checkpoints = {n: (run / n).read_bytes() for n in (storage.LAST, storage.BEST)}
        calls = [
            ["evaluate", run, "--quiet"],
            ["generate", run, "--max-new-tokens", "2"],
            ["train", "--resume", run, "--max-steps", "3"],  # its budget is spent
            ["plot", run, "-o", Path(tmp) / "c.png"],
        ]
        for argv in calls:
            rc, lines = run_cli(capsys, *argv)
            errors = [ln for ln in lines if not ln.startswith("lstmlm: warning:")]
            assert rc in (0, 2), (argv, lines)
            if rc == 2:
                assert len(errors) == 1 and errors[0].startswith("lstmlm"), (argv, lines)
                assert "error: " in errors[0], (argv, lines)
            assert not any("Traceback" in ln for ln in lines), (argv, lines)
        try:
            load_models([run])  # what `lstmlm serve` does first
        except ValueError as e:
            assert "\n" not in str(e)
        assert {n: (run / n).read_bytes() for n in checkpoints} == checkpoints
