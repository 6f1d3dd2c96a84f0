import pytest
import torch

from lstmlm.config import ModelConfig
from lstmlm.nn.model import LanguageModel


def tiny(**kw) -> ModelConfig:
    base = dict(emb_size=8, hidden_size=8, num_layers=2)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_forward_shapes_and_state(rnn):
    m = LanguageModel(tiny(rnn=rnn), vocab_size=11)
    out = m(torch.randint(0, 11, (5, 3)))
    assert out.logits.shape == (5, 3, 11)
    assert len(out.state) == 2
    assert out.state[0][0].shape == (1, 3, 8)
    assert len(out.state[0]) == (2 if rnn == "lstm" else 1)
    assert [h.shape for h in out.hiddens] == [(5, 3, 8), (5, 3, 8)]


def test_state_is_carried():
    m = LanguageModel(tiny(), 11).eval()
    x = torch.randint(0, 11, (6, 2))
    whole = m(x).logits
    first = m(x[:3])
    second = m(x[3:], first.state).logits
    assert torch.allclose(torch.cat([first.logits, second]), whole, atol=1e-6)


def test_tied_weights_share_storage():
    m = LanguageModel(tiny(tie_weights=True), 11)
    assert m.decoder.weight.data_ptr() == m.embedding.weight.data_ptr()
    assert m.proj is None


def test_tying_with_different_sizes_adds_projection():
    m = LanguageModel(tiny(tie_weights=True, emb_size=6, hidden_size=10), 11)
    assert m.proj is not None and m.proj.weight.shape == (6, 10)
    assert m.decoder.weight is m.embedding.weight
    assert m(torch.randint(0, 11, (4, 2))).logits.shape == (4, 2, 11)


def test_fc_layers():
    m = LanguageModel(tiny(fc_layers=2), 11)
    assert len(m.fc) == 2
    assert m(torch.randint(0, 11, (4, 2))).logits.shape == (4, 2, 11)


def test_eval_mode_is_deterministic_with_dropout():
    m = LanguageModel(tiny(dropout=0.5), 11).eval()
    x = torch.randint(0, 11, (5, 2))
    assert torch.equal(m(x).logits, m(x).logits)


@pytest.mark.parametrize(
    "bad", [dict(hidden_size=0), dict(num_layers=-1), dict(dropout=1.5), dict(rnn="transformer")]
)
def test_bad_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        LanguageModel(tiny(**bad), 11)


def test_hidden_sizes_per_layer_and_tied_last_layer():
    # AWD-LSTM's convention: the last layer's size is the embedding size, so tying needs no
    # projection.
    m = LanguageModel(tiny(emb_size=6, hidden_sizes=(10, 8, 6), tie_weights=True), 13)
    assert [layer.hidden_size for layer in m.rnn.layers] == [10, 8, 6]
    assert [layer.input_size for layer in m.rnn.layers] == [6, 10, 8]
    assert m.proj is None and m.decoder.weight is m.embedding.weight
    out = m(torch.randint(0, 13, (4, 2)))
    assert [h.shape[-1] for h in out.hiddens] == [10, 8, 6]
    assert [s[0].shape for s in out.state] == [(1, 2, 10), (1, 2, 8), (1, 2, 6)]
    assert out.dropped.shape == (4, 2, 6)


@pytest.mark.parametrize(
    "bad", [dict(hidden_sizes=()), dict(hidden_sizes=(4, 0)), dict(wdrop=1.0), dict(dropout_e=-0.1)]
)
def test_bad_awd_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        LanguageModel(tiny(**bad), 11)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_manual_cells_match_fused_in_the_model(rnn):
    torch.manual_seed(0)
    fused = LanguageModel(tiny(rnn=rnn), 11).eval()
    manual = LanguageModel(tiny(rnn=rnn, cell="manual"), 11).eval()
    assert fused.state_dict().keys() == manual.state_dict().keys()
    manual.load_state_dict(fused.state_dict())
    x = torch.randint(0, 11, (7, 3))
    assert torch.allclose(fused(x).logits, manual(x).logits, atol=1e-5)


def test_manual_cell_under_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    m = LanguageModel(tiny(cell="manual"), 11).eval()
    x = torch.randint(0, 11, (7, 3))
    ref = m(x).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x).logits.float()
    assert (out - ref).abs().max() < 0.05


def test_mogrifier_model_runs_and_learns():
    torch.manual_seed(0)
    m = LanguageModel(tiny(rnn="mogrifier", mogrifier_rounds=3), 11)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    x = torch.arange(11).repeat(4).view(-1, 1)  # a repeating sequence
    losses = []
    for _ in range(60):
        out = m(x[:-1])
        loss = torch.nn.functional.cross_entropy(out.logits.view(-1, 11), x[1:].view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(out.state[0]) == 2  # (h, c)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_last_logits_equal_the_last_row_of_forward(softmax):
    torch.manual_seed(0)
    cfg = ModelConfig(emb_size=8, hidden_size=8, num_layers=2, softmax=softmax, cutoffs=(10,))
    m = LanguageModel(cfg, 30).eval()
    x = torch.randint(0, 30, (5, 3))
    with torch.no_grad():
        full = m(x)
        last, state = m.last_logits(x)
    assert last.shape == (3, 30)
    assert torch.allclose(last, full.logits[-1], atol=1e-6)
    for a, b in zip(state, full.state, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
