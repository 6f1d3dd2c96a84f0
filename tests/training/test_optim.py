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


def _fused_or_skip(opt):
    from lstmlm.nn.manual import bf16_gemm
    from lstmlm.training.optim import fused_sgd

    if not bf16_gemm.usable():
        pytest.skip("no C kernels with AVX-512 BF16 here: plain SGD runs unfused")
    fused = fused_sgd(opt)
    assert fused is not None
    return fused


@pytest.mark.parametrize("clip", [0.05, 0.0, 1e9])  # clipped, no clipping, a factor of 1
def test_fused_sgd_gives_torchs_clipped_sgd_weights_to_the_bit(clip: float) -> None:
    from lstmlm.training import guard

    torch.manual_seed(0)
    # a matrix with partial blocks of 16 rows and 32 columns, a vector, a (1, n) matrix
    ours = nn.ModuleList([nn.Linear(37, 70), nn.Linear(5, 1)])
    theirs = nn.ModuleList([nn.Linear(37, 70), nn.Linear(5, 1)])
    theirs.load_state_dict(ours.state_dict())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=3.0)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=3.0)
    fused = _fused_or_skip(opt_ours)
    for step in range(3):
        x = torch.randn(9, 37)
        for m in (ours, theirs):
            m.zero_grad()
            m[1](torch.tanh(m[0](x))[:, :5]).pow(2).sum().backward()
        norm = guard.grad_norm(ours.parameters(), 0.0)
        fused.step(guard.clip_coefficient(norm, clip))
        want = guard.grad_norm(theirs.parameters(), clip)  # clips in place when clip > 0
        opt_theirs.step()
        assert torch.equal(norm, want)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b), step


def test_fused_sgd_refreshes_the_kept_bf16_copies_and_their_version() -> None:
    from lstmlm.nn.manual import bf16_gemm

    torch.manual_seed(1)
    layer = nn.Linear(40, 24)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    fused = _fused_or_skip(opt)
    before = bf16_gemm.pack_weight(layer.weight, transpose=True).data.clone()  # kept now
    layer(torch.randn(3, 40)).sum().backward()
    version = layer.weight._version
    fused.step(1.0)
    assert layer.weight._version > version  # autograd sees the in-place update
    kept = bf16_gemm.pack_weight(layer.weight, transpose=True).data
    assert not torch.equal(kept, before)
    assert torch.equal(kept, bf16_gemm.pack(layer.weight.detach(), transpose=True).data)


def test_fused_sgd_only_where_it_is_plain_sgd() -> None:
    from lstmlm.training.optim import fused_sgd

    model = nn.Linear(3, 2)
    for opt in (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4),
        torch.optim.Adam(model.parameters()),
        make_asgd(list(model.parameters()), lr=0.1, weight_decay=0.0),
    ):
        assert fused_sgd(opt) is None
