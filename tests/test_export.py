"""`lstmlm export`: the exported files run outside lstmlm (onnxruntime, torch.export.load)
and give the model's logits and state, step after step with the state fed back, at
several window lengths and batch sizes (the dynamic axes)."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import tiny_config, write_corpus
from lstmlm.config import ModelConfig
from lstmlm.export import ExportModule, export_model, export_run, state_names
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.runs import load_run
from lstmlm.training import start_run

ort = pytest.importorskip("onnxruntime")

SHAPES = [(4, 3), (1, 1), (7, 2)]  # (T, B): differ from the export's example (3, 2)
STEPS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    cfg = tiny_config(write_corpus(d / "c.txt", n_lines=80), epochs=1)
    model = dataclasses.replace(cfg.model, num_layers=2, hidden_size=12, emb_size=12)
    start_run(dataclasses.replace(cfg, model=model), d / "run")
    return d


def _reference(model, ids, flat):
    """The model's own forward on the same window and state: (logits, *state) as numpy."""
    n = 2 if model.rnn.kind != "gru" else 1
    state = [tuple(flat[i : i + n]) for i in range(0, len(flat), n)]
    with torch.no_grad():
        out = model(ids, state)
    return [out.logits, *(t for layer in out.state for t in layer)]


def _check_steps(model, call):
    """`call(ids, *state) -> [logits, *state]` (numpy) matches `model` to 1e-5 over
    STEPS windows per shape, each side feeding its own state back."""
    gen = torch.Generator().manual_seed(0)
    for T, B in SHAPES:
        ours = [t for layer in model.init_state(B) for t in layer]
        theirs = [t.numpy() for t in ours]
        for _ in range(STEPS):
            ids = torch.randint(0, model.vocab_size, (T, B), generator=gen)
            want = _reference(model, ids, ours)
            got = call(ids.numpy(), *theirs)
            assert got[0].shape == (T, B, model.vocab_size)
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-5)
            ours, theirs = want[1:], got[1:]
        assert not np.allclose(theirs[0], 0)  # the state did move


def _onnx_call(path, model):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["ids", *state_names(model)]
    assert [i.name for i in session.get_inputs()] == names

    def call(ids, *state):
        return session.run(None, dict(zip(names, (ids, *state), strict=True)))

    return call


def test_cli_onnx_matches_the_model_over_steps_and_shapes(run):
    out = run / "model.onnx"
    r = subprocess.run(
        [sys.executable, "-m", "lstmlm", "export", run / "run", "--format", "onnx", "-o", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out}"
    assert r.stderr == ""  # torch's exporter notices stay out of the command's output
    import onnx

    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["T", "B"]  # dynamic, named
    assert [o.name for o in proto.graph.output] == [
        "logits",
        "h0_out",
        "c0_out",
        "h1_out",
        "c1_out",
    ]
    model, _, _ = load_run(run / "run")
    _check_steps(model, _onnx_call(out, model))


def test_pt2_matches_the_model_over_steps_and_shapes(run):
    out = export_run(run / "run", run / "model.pt2", "pt2")
    program = torch.export.load(str(out)).module()
    model, _, _ = load_run(run / "run")

    def call(ids, *state):
        with torch.no_grad():
            got = program(torch.from_numpy(ids), *map(torch.from_numpy, state))
        return [t.numpy() for t in got]

    _check_steps(model, call)


def test_gru_with_adaptive_softmax_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(
        rnn="gru", emb_size=8, hidden_size=8, num_layers=1, softmax="adaptive", cutoffs=(6,),
        tie_weights=False,
    )  # fmt: skip
    model = LanguageModel(cfg, 20).eval()
    path = export_model(model, tmp_path / "gru.onnx", "onnx")
    assert state_names(model) == ["h0"]
    _check_steps(model, _onnx_call(path, model))


def test_a_model_without_a_one_step_form_is_refused_in_one_sentence():
    model = LanguageModel(ModelConfig(rnn="mogrifier", emb_size=8, hidden_size=8), 10)
    with pytest.raises(ValueError, match="a mogrifier model cannot be exported"):
        ExportModule(model)


def _export_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lstmlm", "export", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_errors_are_one_line(tmp_path):
    r = _export_cli(tmp_path, "--format", "pt2", "-o", tmp_path / "m.pt2")  # not a run
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "m.pt2").exists()
    r = _export_cli(tmp_path, "--format", "tflite", "-o", tmp_path / "m")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid choice: 'tflite'" in r.stderr.strip().splitlines()[-1]
