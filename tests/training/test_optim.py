import pytest
import torch
from torch import nn

from lstmlm.training.optim import averaged_weights, make_asgd, validation_stalled


def test_switch_rule_on_a_scripted_validation_sequence():
    losses = [5.0, 4.0, 3.5, 3.4, 3.6, 3.45, 3.41, 3.42, 3.39, 3.5]
    switched_at = None
    history: list[float] = []
    for t, loss in enumerate(losses):
        if validation_stalled(history, loss, nonmono=3):
            switched_at = t
            break
        history.append(loss)
    # t=4: 3.6 > min(history[:1]) = 5.0? no.  t=5: 3.45 vs min(5, 4) no.  t=6: 3.41 vs 3.5 no.
    # t=7: 3.42 vs min(5, 4, 3.5, 3.4) = 3.4 -> stalled.
    assert switched_at == 7


def test_switch_rule_needs_more_than_n_checks():
    assert not validation_stalled([1.0, 1.0], 9.0, nonmono=2)
    assert validation_stalled([1.0, 1.0, 1.0], 9.0, nonmono=2)
    assert not validation_stalled([1.0, 2.0, 3.0], 1.0, nonmono=2)  # equal is not worse
    assert validation_stalled([1.0], 1.5, nonmono=0)
    with pytest.raises(ValueError):
        validation_stalled([], 1.0, nonmono=-1)


def test_averaged_weights_are_the_running_mean_of_the_iterates():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = make_asgd(list(model.parameters()), lr=0.1, weight_decay=0.0)
    seen = [model.weight.detach().clone()]  # seen[k]: the weights after step k
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        seen.append(model.weight.detach().clone())
    current = model.weight.detach().clone()
    with averaged_weights(model, opt):
        # torch's ASGD (t0=0) restarts its average at step 2: ax = mean of steps 2..k.
        assert torch.allclose(model.weight, torch.stack(seen[2:]).mean(0), atol=1e-6)
        assert not torch.allclose(model.weight, current)
    assert torch.equal(model.weight, current)


def test_averaged_weights_is_a_no_op_for_plain_sgd():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with averaged_weights(model, opt):
        assert torch.equal(model.weight, before)


def test_ntasgd_switch_does_not_also_decay_the_lr(tmp_path, monkeypatch):
    """Validation that gets worse every epoch: plateau divides the lr by --lr-decay at
    epoch 2; at epoch 3 NT-ASGD switches to averaging, keeping the lr (AWD-LSTM)."""
    import json

    from helpers import tiny_config, write_corpus
    from lstmlm.evaluation.perplexity import result
    from lstmlm.training import start_run
    from lstmlm.training.trainer import Trainer

    real = Trainer.validate
    calls = []

    def worse_each_time(self):
        v = real(self)
        calls.append(1)
        return result((v.loss + len(calls)) * v.tokens, v.tokens)

    monkeypatch.setattr(Trainer, "validate", worse_each_time)
    corpus = write_corpus(tmp_path / "c.txt", n_lines=60)
    cfg = tiny_config(corpus, epochs=3, optimizer="ntasgd", nonmono=1, lr=4.0, lr_decay=4.0)
    start_run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    (switch,) = [r for r in records if r["event"] == "asgd_switch"]
    assert switch["epoch"] == 3
    from lstmlm.training import state

    _, meta = state.read(tmp_path / "run" / "last.safetensors")
    assert meta["trainer"]["averaging"] is True
    assert meta["trainer"]["lr"] == 1.0  # 4 / 4 at epoch 2, and not / 4 again at the switch
