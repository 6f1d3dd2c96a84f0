"""The tied weight's gradient made in one piece (nn/tied.py) equals autograd's sum."""

import pytest
import torch
import torch.nn.functional as F

from lstmlm.config import ModelConfig
from lstmlm.nn import tied
from lstmlm.nn.model import LanguageModel


def _grad(model, tokens, targets, precision):
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        loss = model(tokens, targets=targets).loss
    return torch.autograd.grad(loss, [model.embedding.weight])[0]


@pytest.mark.parametrize("cell", ["fused", "manual"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tied_gradient_equals_the_sum_of_the_lookups_and_the_decoders(monkeypatch, precision, cell):
    torch.manual_seed(0)
    cfg = ModelConfig(
        emb_size=12, hidden_size=12, num_layers=1, dropout=0.0, tie_weights=True, cell=cell
    )
    model = LanguageModel(cfg, 30)
    tokens = torch.randint(0, 30, (7, 3))
    tokens[2:4] = tokens[0:2]  # words that occur more than once in the window
    targets = torch.randint(0, 30, (7, 3))
    assert model._tied_mailbox(targets) is not None  # the one-piece path is taken
    ours = _grad(model, tokens, targets, precision)
    # The same computation with autograd adding the two uses' gradients itself.
    monkeypatch.setattr(LanguageModel, "_tied_mailbox", lambda self, targets: None)
    theirs = _grad(model, tokens, targets, precision)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)


def test_a_lookup_without_the_decoders_gradient_returns_its_own():
    weight = torch.randn(5, 3, requires_grad=True)
    tokens = torch.tensor([[1, 1], [4, 0]])
    out = tied.lookup(weight, tokens, tied.Mailbox())
    (ours,) = torch.autograd.grad((out * 2).sum(), [weight])
    (theirs,) = torch.autograd.grad((F.embedding(tokens, weight) * 2).sum(), [weight])
    assert torch.equal(ours, theirs)


def test_no_mailbox_without_targets_or_with_embedding_dropout():
    cfg = ModelConfig(emb_size=8, hidden_size=8, num_layers=1, tie_weights=True, dropout_e=0.1)
    model = LanguageModel(cfg, 20)
    targets = torch.zeros(2, 2, dtype=torch.long)
    assert model._tied_mailbox(targets) is None  # embedding dropout: the lookup reads W * mask
    model.eval()
    assert model._tied_mailbox(None) is None
