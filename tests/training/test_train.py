import json

import pytest
import torch

from helpers import tiny_config
from lstmlm import storage as ckpt
from lstmlm.config import ModelConfig, RunConfig, replace
from lstmlm.data.batching import window
from lstmlm.data.dataset import load_dataset
from lstmlm.training import Trainer, resume_run, start_run


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
    x, y = window(t.train_data, 0, 8)
    t.train_step(x, y)
    assert all(not s.requires_grad or s.grad_fn is not None for layer in t.hidden for s in layer)
    t.train_step(x, y)  # would fail "backward through the graph a second time"
    from lstmlm.nn.rnn import detach_state

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
        t.train_step(*window(t.train_data, 0, 8))
        grads[red] = t.model.decoder.weight.grad.clone()
    assert torch.allclose(grads["sum"], grads["mean"] * 8, rtol=1e-4, atol=1e-7)


def _all_tensors(path):
    tensors, meta = ckpt.load_tensors(path)
    return tensors, meta


def _assert_same_checkpoints(a, b):
    for name in (ckpt.LAST, ckpt.BEST):
        ta, ma = _all_tensors(a / name)
        tb, mb = _all_tensors(b / name)
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)


def test_resume_is_exact_with_variable_bptt_and_nt_asgd(corpus, tmp_path, monkeypatch):
    # Force the switch to averaged SGD at the end of epoch 1 so the resumed part spans it.
    import lstmlm.training.loop as train_mod

    monkeypatch.setattr(train_mod, "validation_stalled", lambda history, loss, n: True)
    awd = ModelConfig(
        emb_size=16, hidden_sizes=(16,), dropout_e=0.1, dropout_i=0.2, dropout_o=0.2, wdrop=0.3
    )
    base = tiny_config(
        corpus, epochs=3, optimizer="ntasgd", variable_bptt=True, alpha=2.0, beta=1.0
    )
    cfg = RunConfig(base.data, awd, base.train)
    start_run(cfg, tmp_path / "full")
    meta = _all_tensors(tmp_path / "full" / ckpt.LAST)[1]
    assert meta["trainer"]["averaging"] is True
    assert any(k.endswith(".ax") for k in _all_tensors(tmp_path / "full" / ckpt.LAST)[0])
    events = [json.loads(line)["event"] for line in (tmp_path / "full" / ckpt.METRICS).open()]
    assert events.count("asgd_switch") == 1
    # Interrupted once before the switch (mid-epoch 1) and once after it (mid-epoch 2).
    start_run(replace_train(cfg, max_steps=13), tmp_path / "cut")
    resume_run(tmp_path / "cut", {"max_steps": 60})
    assert _all_tensors(tmp_path / "cut" / ckpt.LAST)[1]["trainer"]["epoch"] == 1
    resume_run(tmp_path / "cut", {"max_steps": None})
    _assert_same_checkpoints(tmp_path / "full", tmp_path / "cut")


def test_asgd_fine_tuning_stops_when_validation_stalls(corpus, tmp_path, monkeypatch):
    from lstmlm.training import finetune_run

    start_run(tiny_config(corpus, epochs=1), tmp_path / "run")
    best_loss = _all_tensors(tmp_path / "run" / ckpt.BEST)[1]["valid_loss"]
    import lstmlm.training.loop as train_mod

    stalls = iter([False, True])
    monkeypatch.setattr(train_mod, "validation_stalled", lambda history, loss, n: next(stalls))
    result = finetune_run(tmp_path / "run", epochs=5, lr=1.0)
    out = tmp_path / "run-finetune"
    assert result.stopped == "stalled"
    info, _ = ckpt.read_run_files(out)
    assert info.config.train.optimizer == "asgd" and info.config.train.epochs == 5
    epochs = [r for r in map(json.loads, (out / ckpt.METRICS).open()) if r["event"] == "epoch"]
    assert len(epochs) == 2
    # best starts as the source run's best model and only improves
    assert result.valid.loss <= best_loss + 1e-9
    assert result.valid.loss == pytest.approx(min([best_loss] + [e["valid_loss"] for e in epochs]))
    with pytest.raises(ValueError, match="already holds a run"):
        finetune_run(tmp_path / "run", epochs=1)


def test_ar_tar_enter_the_gradient_but_not_the_reported_loss(corpus, tmp_path):
    results = {}
    for alpha in (0.0, 3.0):
        cfg = tiny_config(corpus, alpha=alpha, beta=alpha, clip=0)
        data = load_dataset(cfg.data)
        (tmp_path / str(alpha)).mkdir()
        t = Trainer(tmp_path / str(alpha), cfg, data)
        t.opt = torch.optim.SGD(t.model.parameters(), lr=0.0)
        torch.manual_seed(0)  # same dropout masks in both runs
        loss = t.train_step(*window(t.train_data, 0, 8))
        results[alpha] = (loss.item(), t.model.rnn.layers[0].weight_hh_l0.grad.clone())
    assert results[0.0][0] == pytest.approx(results[3.0][0])
    assert not torch.allclose(results[0.0][1], results[3.0][1])


def test_variable_bptt_scales_the_step_lr(corpus, tmp_path):
    cfg = tiny_config(corpus, variable_bptt=True, bptt=10)
    t = Trainer(tmp_path, cfg, load_dataset(cfg.data))
    lengths = set()
    for _ in range(30):
        x, y = t.next_window()
        assert x.shape == y.shape and x.size(0) >= 5
        assert t.opt.param_groups[0]["lr"] == pytest.approx(t.st.lr * x.size(0) / 10)
        lengths.add(x.size(0))
    assert len(lengths) > 3 and t.st.lr == 5.0


@pytest.mark.parametrize(
    "rnn,cell", [("lstm", "manual"), ("gru", "manual"), ("mogrifier", "manual")]
)
def test_hand_written_layers_train_in_bf16(corpus, tmp_path, rnn, cell):
    cfg = tiny_config(corpus, epochs=3, precision="bf16")
    cfg = RunConfig(cfg.data, replace(cfg.model, rnn=rnn, cell=cell, mogrifier_rounds=2), cfg.train)
    result = start_run(cfg, tmp_path / "run")
    epochs = [json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS).open()]
    losses = [r["train_loss"] for r in epochs if r["event"] == "epoch"]
    assert losses[-1] < losses[0]
    assert result.valid.ppl < 15


def test_keep_checkpoints_keeps_the_last_n_epochs(tmp_path):
    import re

    from helpers import write_corpus
    from lstmlm.storage import checkpoint
    from lstmlm.training import state

    corpus = write_corpus(tmp_path / "c.txt", n_lines=60)
    run = tmp_path / "run"
    start_run(tiny_config(corpus, epochs=4, keep_checkpoints=2), run)
    records = [json.loads(line) for line in (run / ckpt.METRICS).open()]
    losses = {r["epoch"]: r["valid_loss"] for r in records if r["event"] == "epoch"}
    kept = sorted(p.name for p in run.glob("epoch*.safetensors"))
    assert kept == [f"epoch{e:02d}-valid{losses[e]:.3f}.safetensors" for e in (3, 4)]
    assert re.fullmatch(r"epoch04-valid\d+\.\d{3}\.safetensors", kept[-1])
    # epoch 4's file holds the weights last.safetensors has after epoch 4
    tensors, meta = checkpoint.load_tensors(run / kept[-1])
    assert meta == {"epoch": 4, "valid_loss": losses[4]}
    last, _ = state.read(run / ckpt.LAST)
    for name, t in tensors.items():
        assert torch.equal(t, last[name]), name
    start_run(tiny_config(corpus, epochs=1), run, overwrite=True)  # off by default
    assert list(run.glob("epoch*.safetensors")) == []


def test_training_from_the_mapped_ids_equals_training_from_a_tensor(corpus, tmp_path):
    """The token cache's uint16 map, its columns strided views, gives the very weights and
    scores that int64 ids in memory give (variable BPTT, dropout, an epoch and a half)."""
    import dataclasses

    from lstmlm.training.loop import Loop

    cfg = tiny_config(corpus, variable_bptt=True, max_steps=60, epochs=3)
    mapped = load_dataset(cfg.data)
    assert mapped.train.dtype == torch.uint16 and mapped.tokens is not None
    memory = dataclasses.replace(
        mapped,
        train=mapped.train.long().clone(),
        valid=mapped.valid.long().clone(),
        test=mapped.test.long().clone(),
        tokens=None,
    )
    models, results = [], []
    for name, data in (("mapped", mapped), ("memory", memory)):
        (tmp_path / name).mkdir()
        t = Trainer(tmp_path / name, cfg, data)
        results.append(Loop(t).run())
        models.append(t.model.state_dict())
    assert results[0].valid == results[1].valid and results[0].test == results[1].test
    assert models[0].keys() == models[1].keys()
    for k in models[0]:
        assert torch.equal(models[0][k], models[1][k]), k


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_fused_sgd_step_trains_the_same_weights_as_torchs(
    corpus, tmp_path, monkeypatch, precision
):
    """Trainer.update runs plain SGD as one fused pass (optim.fused_sgd) where it can: the
    same weights to the bit as clip_grad_norm_ + torch.optim.SGD, with the hand-written
    bf16 layers reading the copies the fused pass keeps."""
    import lstmlm.training.trainer as trainer_module
    from lstmlm.nn.manual import bf16_gemm
    from lstmlm.training.optim import FusedSGD

    if not bf16_gemm.usable():
        pytest.skip("no C kernels with AVX-512 BF16 here: plain SGD runs unfused")
    cfg = tiny_config(corpus, epochs=1, max_steps=6, precision=precision, clip=0.1)
    cfg = RunConfig(cfg.data, replace(cfg.model, cell="manual", tie_weights=True), cfg.train)
    runs, fused_steps = {}, []
    step = FusedSGD.step
    monkeypatch.setattr(FusedSGD, "step", lambda self, c: (fused_steps.append(c), step(self, c)))
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(trainer_module, "fused_sgd", lambda opt: None)
        start_run(cfg, tmp_path / str(fused))
        runs[fused] = _weights(tmp_path / str(fused))
    assert len(fused_steps) == 6 and min(fused_steps) < 1.0  # fused, and clipping on some
    for k in runs[True]:
        assert torch.equal(runs[True][k], runs[False][k]), k
