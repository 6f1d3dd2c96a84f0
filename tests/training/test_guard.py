"""Non-finite steps: skipped without touching the weights, restored, or a clean stop."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import tiny_config, write_corpus
from lstmlm import storage as ckpt
from lstmlm.data.batching import window
from lstmlm.data.dataset import load_dataset
from lstmlm.nn.model import LanguageModel
from lstmlm.training import Trainer, start_run
from lstmlm.training.guard import NonFiniteGuard, step_is_finite
from lstmlm.training.state import detached_copy


def test_guard_counts_skip_restore_diverged():
    g = NonFiniteGuard(patience=2, max_restores=1)
    assert [g.record(ok) for ok in (False, True, False)] == ["skip", "ok", "skip"]
    assert g.record(False) == "restore"  # 2 in a row
    assert [g.record(False), g.record(False)] == ["skip", "diverged"]
    assert g.skipped == 5 and g.restores == 1


@pytest.mark.parametrize(
    "loss,norm,ok",
    [(1.0, 2.0, True), (math.nan, 2.0, False), (1.0, math.inf, False), (1.0, math.nan, False)],
)
def test_step_is_finite(loss, norm, ok):
    assert step_is_finite(torch.tensor(loss), torch.tensor(norm)) is ok


def _poison_forward(monkeypatch, bad_steps):
    """NaN loss on the chosen 1-based training forward calls (eval calls are untouched).

    `bad_steps` is a set of call numbers or a predicate on the call number.
    """
    is_bad = bad_steps if callable(bad_steps) else bad_steps.__contains__
    real = LanguageModel.forward
    calls = {"n": 0}

    def forward(self, tokens, state=None, targets=None):
        out = real(self, tokens, state, targets)
        if not self.training:
            return out
        calls["n"] += 1
        if is_bad(calls["n"]):
            loss = out.loss * math.nan  # keeps the graph: gradients are NaN too
            return dataclasses.replace(out, loss=loss)
        return out

    monkeypatch.setattr(LanguageModel, "forward", forward)
    return calls


def _events(run, kind):
    return [r for r in map(json.loads, (run / ckpt.METRICS).open()) if r["event"] == kind]


@pytest.mark.parametrize("optimizer,clip", [("adam", 1.0), ("sgd", 0.0)])
@pytest.mark.parametrize("where", ["loss", "grad"])
def test_bad_step_leaves_weights_and_optimizer_untouched(
    corpus, tmp_path, monkeypatch, optimizer, clip, where
):
    cfg = tiny_config(corpus, optimizer=optimizer, lr=0.01, clip=clip, momentum=0.0)
    t = Trainer(tmp_path, cfg, load_dataset(cfg.data))
    x, y = window(t.train_data, 0, 8)
    t.train_step(x, y)  # one good step: the optimizer has state now
    assert t.step_ok
    weights = {k: v.clone() for k, v in t.model.state_dict().items()}
    opt_state = {
        i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
        for i, s in enumerate(t.opt.state.values())
    }
    if where == "loss":
        _poison_forward(monkeypatch, {1})
    else:  # finite loss, NaN gradient on one weight
        t.model.decoder.bias.register_hook(lambda g: torch.full_like(g, math.nan))
    loss = t.train_step(x, y)
    assert not t.step_ok
    assert math.isnan(loss.item()) == (where == "loss")
    assert t.bad_step["grad_norm"] == "nan"
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for i, s in enumerate(t.opt.state.values()):
        for k, v in opt_state[i].items():
            assert torch.equal(s[k], v), (i, k)


def test_isolated_nan_steps_are_skipped_and_logged(corpus, tmp_path, monkeypatch):
    _poison_forward(monkeypatch, {5, 9})
    result = start_run(tiny_config(corpus, epochs=1), tmp_path / "run")
    bad = _events(tmp_path / "run", "nonfinite")
    assert [(e["step"], e["lr"], e["loss"]) for e in bad] == [(5, 5.0, "nan"), (9, 5.0, "nan")]
    assert not _events(tmp_path / "run", "nonfinite_restore")
    assert math.isfinite(result.valid.loss)
    progress = _events(tmp_path / "run", "progress")
    assert progress and all(math.isfinite(p["train_loss"]) for p in progress)
    tensors, _ = ckpt.load_tensors(tmp_path / "run" / ckpt.LAST)
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_nan_streak_restores_the_start_state_and_halves_lr(corpus, tmp_path, monkeypatch):
    # Steps 10-12 bad, no checkpoint written yet: back to the start, lr 5 -> 2.5.
    _poison_forward(monkeypatch, {10, 11, 12})
    result = start_run(tiny_config(corpus, epochs=1, lr_schedule="none"), tmp_path / "run")
    (restore,) = _events(tmp_path / "run", "nonfinite_restore")
    assert restore["lr"] == 2.5 and restore["step"] == 0 and restore["restores"] == 1
    assert [e["step"] for e in _events(tmp_path / "run", "nonfinite")] == [10, 11, 12]
    (epoch,) = _events(tmp_path / "run", "epoch")
    assert epoch["lr"] == 2.5
    assert result.stopped == "epochs" and math.isfinite(result.valid.loss)
    assert (tmp_path / "run" / ckpt.SUMMARY).exists()


def test_divergence_restores_then_stops_with_a_clear_error(corpus, tmp_path, monkeypatch):
    # Every step of epoch 2 is NaN: restore last.safetensors (end of epoch 1) twice, then stop.
    saved = {}
    calls = _poison_forward(monkeypatch, lambda n: "bytes" in saved)
    cfg = tiny_config(corpus, epochs=3, nan_patience=2, nan_max_restores=2, lr_schedule="none")
    data = load_dataset(cfg.data)
    steps_per_epoch = (data.train.numel() // 4 - 1 + 7) // 8
    real_save = Trainer.save_last

    def save_last(self):
        real_save(self)
        if calls["n"] >= steps_per_epoch and not saved:
            # From now on every training forward is NaN.
            saved["bytes"] = (self.run_dir / ckpt.LAST).read_bytes()

    monkeypatch.setattr(Trainer, "save_last", save_last)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as e:
        start_run(cfg, run)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("training diverged: loss is NaN")
    assert "2 restore(s)" in msg and "lower --lr" in msg and str(run / ckpt.LAST) in msg
    restores = _events(run, "nonfinite_restore")
    assert [r["lr"] for r in restores] == [2.5, 1.25]
    assert len(_events(run, "nonfinite")) == 6 and len(_events(run, "diverged")) == 1
    # The last good state is on disk, untouched, and both checkpoints load.
    assert (run / ckpt.LAST).read_bytes() == saved["bytes"]
    ckpt.load_run(run, "last")
    ckpt.load_run(run, "best")
    assert not (run / ckpt.SUMMARY).exists()


def test_cli_real_divergence_is_one_line_exit_2(tmp_path):
    # A learning rate of 1e38 blows the weights up to inf for real: no monkeypatching.
    corpus = write_corpus(tmp_path / "c.txt", n_lines=200)
    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "lstmlm", "train", "--train", str(corpus), "--out", str(run)]
        + "--emb-size 16 --hidden-size 16 --num-layers 1 --batch-size 4 --bptt 8 --epochs 2 "
        "--lr 1e38 --nan-patience 2 --nan-max-restores 1 --quiet".split(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("lstmlm: error: training diverged: loss is NaN or inf")
    assert "try a lower --lr" in lines[0]
    assert not (run / ckpt.SUMMARY).exists()
    assert _events(run, "nonfinite_restore")[0]["lr"] == 5e37


def test_the_start_snapshot_copies_tied_weights_once(corpus, tmp_path):
    cfg = tiny_config(corpus)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tie_weights=True))
    t = Trainer(tmp_path, cfg, load_dataset(cfg.data))
    snap = detached_copy(t.capture())
    assert "decoder.weight" not in snap.model  # the tied weight is kept once
    assert snap.model["embedding.weight"].data_ptr() != t.model.embedding.weight.data_ptr()
    before = snap.model["embedding.weight"].clone()
    t.train_step(*window(t.train_data, 0, 8))
    assert torch.equal(snap.model["embedding.weight"], before)  # a copy, not a view
    t.restore(detached_copy(snap))
    assert torch.equal(t.model.embedding.weight, before)
    assert t.model.decoder.weight is t.model.embedding.weight
