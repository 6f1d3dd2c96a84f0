import math

import pytest
import torch
import torch.nn.functional as F

from lstmlm.config import ModelConfig
from lstmlm.evaluate import evaluate
from lstmlm.model import LanguageModel


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=2, dropout=0.3), 13)


def test_evaluation_equals_exp_of_mean_nll_by_hand(model):
    ids = torch.randint(0, 13, (41,))
    res = evaluate(model, ids, "word", batch_size=1, bptt=7)
    model.eval()
    with torch.no_grad():
        logits = model(ids[:-1].unsqueeze(1)).logits.squeeze(1)  # (N-1, V)
        nll = F.cross_entropy(logits, ids[1:], reduction="mean").item()
    assert res.tokens == 40
    assert res.loss == pytest.approx(nll, rel=1e-5)
    assert res.ppl == pytest.approx(math.exp(nll), rel=1e-5)
    assert res.bpc is None


def test_evaluation_is_deterministic_and_restores_train_mode(model):
    ids = torch.randint(0, 13, (200,))
    model.train()
    a = evaluate(model, ids, "char", batch_size=4, bptt=9)
    b = evaluate(model, ids, "char", batch_size=4, bptt=9)
    assert a == b
    assert model.training
    assert a.bpc == pytest.approx(a.loss / math.log(2))


def test_window_length_does_not_change_the_result(model):
    ids = torch.randint(0, 13, (120,))
    a = evaluate(model, ids, "word", batch_size=3, bptt=5)
    b = evaluate(model, ids, "word", batch_size=3, bptt=50)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
