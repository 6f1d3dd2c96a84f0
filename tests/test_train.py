import json

import pytest
import torch

from helpers import tiny_config
from lstmlm import checkpoint as ckpt
from lstmlm.config import replace
from lstmlm.dataset import load_dataset
from lstmlm.train import Trainer, resume_run, start_run


def test_tiny_model_learns_the_corpus(corpus, tmp_path):
    cfg = tiny_config(corpus, epochs=6, lr=10.0)
    result = start_run(cfg, tmp_path / "run")
    # 25 word types with a fixed grammar: uniform is ppl ~27, the grammar allows far less.
    assert result.valid.ppl < 8.0
    records = [json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS).open()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 6
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    summary = json.loads((tmp_path / "run" / ckpt.SUMMARY).read_text())
    assert summary["valid_ppl"] == pytest.approx(result.valid.ppl)


def test_carried_state_is_detached(corpus, tmp_path):
    cfg = tiny_config(corpus)
    data = load_dataset(cfg.data)
    (tmp_path / "r").mkdir()
    t = Trainer(tmp_path / "r", cfg, data)
    x = t.train_data[:8]
    t.train_step(x, t.train_data[1:9])
    assert all(not s.requires_grad or s.grad_fn is not None for layer in t.hidden for s in layer)
    t.train_step(x, t.train_data[1:9])  # would fail "backward through the graph a second time"
    from lstmlm.rnn import detach_state

    assert all(s.grad_fn is None for layer in detach_state(t.hidden) for s in layer)


def _weights(run):
    tensors, _ = ckpt.load_tensors(run / ckpt.LAST)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_resume_after_interruption_gives_identical_weights(corpus, tmp_path):
    cfg = tiny_config(corpus, epochs=2)
    start_run(cfg, tmp_path / "full")
    # The same run, stopped mid-epoch 1 and then resumed.
    start_run(replace_train(cfg, max_steps=13), tmp_path / "cut")
    state = json.loads((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()[-1])
    assert state["event"] == "final" and state["stopped"] == "steps"
    resume_run(tmp_path / "cut", {"max_steps": None})
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.equal(full[k], cut[k]), k


def replace_train(cfg, **kw):
    from lstmlm.config import RunConfig

    return RunConfig(cfg.data, cfg.model, replace(cfg.train, **kw), cfg.preset)


def test_time_budget_stops_and_still_evaluates(corpus, tmp_path):
    cfg = tiny_config(corpus, epochs=1000, max_minutes=0.02)
    result = start_run(cfg, tmp_path / "run")
    assert result.stopped == "time"
    assert result.epochs < 1000
    assert result.seconds >= 0.02 * 60
    assert (tmp_path / "run" / ckpt.BEST).exists()


def test_existing_run_is_not_overwritten(corpus, tmp_path):
    cfg = tiny_config(corpus, epochs=1)
    start_run(cfg, tmp_path / "run")
    before = (tmp_path / "run" / ckpt.LAST).read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        start_run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / ckpt.LAST).read_bytes() == before


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("adamw", 0.01), ("rmsprop", 0.005)])
def test_other_optimizers_resume(corpus, tmp_path, optimizer, lr):
    cfg = tiny_config(corpus, epochs=1, optimizer=optimizer, lr=lr)
    start_run(cfg, tmp_path / "full")
    start_run(replace_train(cfg, max_steps=7), tmp_path / "cut")
    resume_run(tmp_path / "cut", {"max_steps": None})
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in full:
        assert torch.equal(full[k], cut[k]), k


def test_epoch_schedule_decays_after_k(corpus, tmp_path):
    cfg = tiny_config(corpus, epochs=4, lr_schedule="epoch", lr_decay=2.0, decay_after=2)
    start_run(cfg, tmp_path / "run")
    lrs = [
        json.loads(line)["lr"]
        for line in (tmp_path / "run" / ckpt.METRICS).open()
        if json.loads(line)["event"] == "epoch"
    ]
    assert lrs == [5.0, 5.0, 2.5, 1.25]


def test_sum_reduction_scales_the_gradient_by_bptt(corpus, tmp_path):
    grads = {}
    for red in ("mean", "sum"):
        cfg = tiny_config(corpus, loss_reduction=red, clip=0)
        data = load_dataset(cfg.data)
        (tmp_path / red).mkdir()
        t = Trainer(tmp_path / red, cfg, data)
        t.opt = torch.optim.SGD(t.model.parameters(), lr=0.0)
        t.train_step(t.train_data[:8], t.train_data[1:9])
        grads[red] = t.model.decoder.weight.grad.clone()
    assert torch.allclose(grads["sum"], grads["mean"] * 8, rtol=1e-4, atol=1e-7)
