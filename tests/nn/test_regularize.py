import math

import pytest
import torch
from torch import nn

from lstmlm.config import ModelConfig
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.regularize import (
    VBPTT_MAX_DELTA,
    VBPTT_MIN,
    activation_regularization,
    dropout,
    dropout_mask,
    embedding_dropout,
    locked_dropout,
    sample_bptt,
    temporal_activation_regularization,
    weight_dropped_call,
)

AWD = dict(dropout_e=0.3, dropout_i=0.4, dropout_h=0.3, dropout_o=0.4, wdrop=0.5)


def awd_config(**kw) -> ModelConfig:
    base = dict(emb_size=6, hidden_sizes=(10, 8, 6), tie_weights=True, **AWD)
    base.update(kw)
    return ModelConfig(**base)


def test_dropout_mask_values_and_mean():
    torch.manual_seed(0)
    m = dropout_mask(torch.empty(200, 300), 0.25)
    values = m.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert m.mean().item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError):
        dropout_mask(torch.empty(3), 1.0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.65])
def test_dropout_mask_drops_the_asked_fraction_for_any_shape(p):
    torch.manual_seed(1)
    m = dropout_mask(torch.empty(7, 11, 13, dtype=torch.float64), p)  # 1001: not a multiple of 4
    assert m.shape == (7, 11, 13) and m.dtype == torch.float64
    big = dropout_mask(torch.empty(400_000), p)
    dropped = (big == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=0.005)  # 6 standard deviations at p = 0.5
    assert big.mean().item() == pytest.approx(1.0, abs=0.01)


def test_dropout_mask_near_one_keeps_a_finite_scale():
    m = dropout_mask(torch.empty(1000), 1 - 1e-9)  # rounds to 65535 / 65536 dropped
    assert torch.isfinite(m).all() and set(m.unique().tolist()) <= {0.0, 65536.0}


def test_dropout_scales_kept_elements_and_is_the_identity_in_eval():
    torch.manual_seed(2)
    x = torch.randn(5, 4, 30, requires_grad=True)
    y = dropout(x, 0.5, training=True)
    kept = y != 0
    assert 0 < kept.sum() < x.numel()
    torch.testing.assert_close(y[kept], 2 * x[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 2)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x


def test_locked_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(0)
    x = torch.ones(7, 5, 40)  # (T, B, H)
    y = locked_dropout(x, 0.5)
    zeros = y == 0  # (T, B, H)
    assert zeros.any() and not zeros.all()
    assert torch.equal(zeros, zeros[:1].expand_as(zeros))  # same pattern at every step
    assert not torch.equal(zeros[0, 0], zeros[0, 1])  # but its own mask per sequence
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_whole_word_vectors_consistently():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    tokens = torch.arange(20).repeat(3, 1).t().contiguous()  # (20, 3): every word in 3 columns
    out = embedding_dropout(emb, tokens, 0.5)  # (20, 3, 8)
    dropped = (out == 0).all(-1)  # (20, 3)
    assert dropped.any() and not dropped.all()
    # A word is dropped everywhere it occurs, or nowhere; kept ones are scaled by 1/(1-p).
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    kept = ~dropped[:, 0]
    expected = emb.weight[tokens[kept]] * 2.0
    assert torch.allclose(out[kept], expected)
    assert torch.equal(embedding_dropout(emb, tokens, 0.5, training=False), emb(tokens))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_weight_drop_is_functional_and_differentiable(kind):
    torch.manual_seed(0)
    layer = nn.LSTM(4, 5) if kind == "lstm" else nn.GRU(4, 5)
    before = layer.weight_hh_l0.detach().clone()
    x = torch.randn(6, 2, 4)
    h0 = torch.zeros(1, 2, 5)
    hx = (h0, h0) if kind == "lstm" else h0
    out, _ = weight_dropped_call(layer, x, hx, 0.5)
    plain, _ = layer(x, hx)
    assert not torch.allclose(out, plain)
    assert torch.equal(layer.weight_hh_l0, before)  # the parameter itself is untouched
    out.sum().backward()
    g = layer.weight_hh_l0.grad
    assert g is not None and (g == 0).any() and (g != 0).any()  # masked entries get no gradient
    same, _ = weight_dropped_call(layer, x, hx, 0.5, training=False)
    assert torch.equal(same, plain)


def test_weight_drop_changes_outputs_but_not_the_state_dict():
    torch.manual_seed(0)
    no_dropout = dict(dropout_e=0, dropout_i=0, dropout_h=0, dropout_o=0)
    awd = LanguageModel(awd_config(**no_dropout), 13)
    plain = LanguageModel(awd_config(wdrop=0, **no_dropout), 13)
    assert awd.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(awd.state_dict())
    x = torch.randint(0, 13, (5, 3))
    assert not torch.allclose(awd.train()(x).logits, plain.train()(x).logits)
    assert torch.equal(awd.eval()(x).logits, plain.eval()(x).logits)


def test_eval_turns_every_dropout_off():
    torch.manual_seed(0)
    awd = LanguageModel(awd_config(dropout=0.3), 13)
    plain = LanguageModel(ModelConfig(emb_size=6, hidden_sizes=(10, 8, 6), tie_weights=True), 13)
    plain.load_state_dict(awd.state_dict())
    x = torch.randint(0, 13, (5, 3))
    a, b = awd.train()(x).logits, awd.train()(x).logits
    assert not torch.equal(a, b)  # dropout is on in train mode
    awd.eval(), plain.eval()
    first = awd(x).logits
    assert torch.equal(first, awd(x).logits)
    assert torch.equal(first, plain(x).logits)


def test_ar_and_tar_match_hand_computation():
    h = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]], [[0.0, 0.0]]])  # (T=3, B=1, H=2)
    # AR: alpha * mean(h^2) = 2 * (1 + 4 + 9 + 1 + 0 + 0) / 6
    assert activation_regularization(h, 2.0).item() == pytest.approx(2 * 15 / 6)
    # TAR: beta * mean of squared steps: (2^2 + 3^2 + 3^2 + 1^2) / 4
    assert temporal_activation_regularization(h, 0.5).item() == pytest.approx(0.5 * 23 / 4)
    assert temporal_activation_regularization(h[:1], 1.0).item() == 0.0
    assert activation_regularization(h, 0.0).item() == 0.0


def test_variable_bptt_lengths_follow_the_distribution():
    g = torch.Generator().manual_seed(0)
    bptt = 70
    lengths = torch.tensor([sample_bptt(bptt, g) for _ in range(20000)], dtype=torch.float)
    assert lengths.min() >= VBPTT_MIN and lengths.max() <= bptt + VBPTT_MAX_DELTA
    short = lengths < (bptt * 0.75)  # the bptt/2 mode, 7 standard deviations from the other
    assert short.float().mean().item() == pytest.approx(0.05, abs=0.01)
    # floor(N(mu, 5)) has mean mu - 0.5 and standard deviation ~5
    assert lengths[~short].mean().item() == pytest.approx(bptt - 0.5, abs=0.3)
    assert lengths[~short].std().item() == pytest.approx(5.0, abs=0.3)
    assert lengths[short].mean().item() == pytest.approx(bptt / 2 - 0.5, abs=1.0)
    # the generator state alone reproduces the sequence
    g1 = torch.Generator().manual_seed(5)
    state = g1.get_state()
    first = [sample_bptt(bptt, g1) for _ in range(10)]
    g2 = torch.Generator()
    g2.set_state(state)
    assert [sample_bptt(bptt, g2) for _ in range(10)] == first


def test_variable_bptt_respects_the_minimum_for_short_bptt():
    g = torch.Generator().manual_seed(1)
    lengths = [sample_bptt(6, g) for _ in range(2000)]
    assert min(lengths) == VBPTT_MIN and max(lengths) <= 26
    assert math.isclose(sum(v == VBPTT_MIN for v in lengths) / 2000, 0.5, abs_tol=0.15)
