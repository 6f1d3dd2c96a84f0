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
