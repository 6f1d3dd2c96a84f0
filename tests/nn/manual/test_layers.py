"""Hand-written recurrent layers against single- and two-layer nn.LSTM / nn.GRU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import lstmlm.nn.manual.common as manual_common
import lstmlm.nn.manual.gru as manual_gru
import lstmlm.nn.manual.lstm as manual_lstm
from lstmlm.nn.manual import ManualGRU, ManualLSTM, MogrifierLSTM
from lstmlm.nn.manual.cells import MogrifierLSTMCell

T, B, IN, H = 6, 3, 5, 7
IMPLS = ["function", "loop"]
KINDS = {"lstm": (ManualLSTM, nn.LSTM), "gru": (ManualGRU, nn.GRU)}
# float64 runs the plain-matmul fallback; float32 the oneDNN packed-weight path.
DTYPES = {torch.float64: 1e-10, torch.float32: 1e-5}


def _state(kind: str, layers: int, dtype: torch.dtype, grad: bool = True):
    def one() -> torch.Tensor:
        return torch.randn(layers, B, H, dtype=dtype, requires_grad=grad)

    return (one(), one()) if kind == "lstm" else one()


def _flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def _loss(out: torch.Tensor, state) -> torch.Tensor:
    # Weights every output and final state differently so no gradient path is trivial.
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return (out * w).sum() + sum((s**2).sum() for s in _flat(state))


def _assert_all_close(xs, ys, atol: float) -> None:
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_single_layer_matches_torch(kind: str, impl: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    ours_cls, ref_cls = KINDS[kind]
    ours = ours_cls(IN, H, impl=impl).to(dtype)
    ref = ref_cls(IN, H).to(dtype)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(T, B, IN, dtype=dtype, requires_grad=True)
    hx = _state(kind, 1, dtype)

    out1, s1 = ours(x, hx)
    out2, s2 = ref(x, hx)
    atol = DTYPES[dtype]
    _assert_all_close([out1, *_flat(s1)], [out2, *_flat(s2)], atol)
    inputs = [x, *_flat(hx)]
    g1 = torch.autograd.grad(_loss(out1, s1), inputs + list(ours.parameters()))
    g2 = torch.autograd.grad(_loss(out2, s2), inputs + list(ref.parameters()))
    _assert_all_close(g1, g2, atol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_two_layer_stack_matches_torch(kind: str, impl: str) -> None:
    torch.manual_seed(1)
    ours_cls, ref_cls = KINDS[kind]
    dtype = torch.float64
    layers = nn.ModuleList([ours_cls(IN, H, impl=impl), ours_cls(H, H, impl=impl)]).to(dtype)
    ref = ref_cls(IN, H, num_layers=2).to(dtype)
    ref.load_state_dict(
        {
            f"{name[: -len('_l0')]}_l{k}": p
            for k, layer in enumerate(layers)
            for name, p in layer.state_dict().items()
        },
        strict=True,
    )
    x = torch.randn(T, B, IN, dtype=dtype, requires_grad=True)
    hx = _state(kind, 2, dtype)

    y = x
    finals = []
    for k, layer in enumerate(layers):
        layer_hx = tuple(s[k : k + 1] for s in hx) if kind == "lstm" else hx[k : k + 1]
        y, s = layer(y, layer_hx)
        finals.append(_flat(s))
    s1 = tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
    s1 = s1 if kind == "lstm" else s1[0]
    out2, s2 = ref(x, hx)
    _assert_all_close([y, *_flat(s1)], [out2, *_flat(s2)], 1e-10)
    inputs = [x, *_flat(hx)]
    g1 = torch.autograd.grad(_loss(y, s1), inputs + list(layers.parameters()))
    g2 = torch.autograd.grad(_loss(out2, s2), inputs + list(ref.parameters()))
    # nn.LSTM orders parameters layer by layer, like the ModuleList.
    _assert_all_close(g1, g2, 1e-10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trip_with_torch(kind: str) -> None:
    ours_cls, ref_cls = KINDS[kind]
    ours, ref = ours_cls(IN, H), ref_cls(IN, H)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict(), strict=True)
    fresh = ours_cls(IN, H)
    fresh.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
        assert fresh.state_dict()[k].shape == ref.state_dict()[k].shape


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_none_state_is_zeros_and_no_grad_path_agrees(kind: str, impl: str) -> None:
    torch.manual_seed(2)
    layer = KINDS[kind][0](IN, H, impl=impl)
    x = torch.randn(T, B, IN)
    zero = torch.zeros(1, B, H)
    zeros = (zero, zero) if kind == "lstm" else zero
    out1, s1 = layer(x, None)
    out2, s2 = layer(x, zeros)
    with torch.no_grad():
        out3, s3 = layer(x, None)
    _assert_all_close([out1, *_flat(s1)], [out2, *_flat(s2)], 1e-6)
    _assert_all_close([out1, *_flat(s1)], [out3, *_flat(s3)], 1e-6)
    assert out1.shape == (T, B, H)
    assert all(s.shape == (1, B, H) for s in _flat(s1))


@pytest.mark.parametrize("kind", list(KINDS))
def test_unbatched_input_matches_torch(kind: str) -> None:
    ours_cls, ref_cls = KINDS[kind]
    ours, ref = ours_cls(IN, H), ref_cls(IN, H)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, IN)
    out1, s1 = ours(x)
    out2, s2 = ref(x)
    assert out1.shape == (T, H)
    _assert_all_close([out1, *_flat(s1)], [out2, *_flat(s2)], 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_functional_call_with_dropped_weight_hh(kind: str, impl: str) -> None:
    torch.manual_seed(3)
    ours_cls, ref_cls = KINDS[kind]
    layer = ours_cls(IN, H, impl=impl).double()
    ref = ref_cls(IN, H).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64)
    mask = (torch.rand_like(layer.weight_hh_l0) > 0.5).double()
    dropped = layer.weight_hh_l0 * mask / 0.5

    out_plain, _ = layer(x)
    out, state = functional_call(layer, {"weight_hh_l0": dropped}, (x, None))
    assert not torch.allclose(out, out_plain)
    out_ref, _ = functional_call(ref, {"weight_hh_l0": dropped.detach()}, (x, None))
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)

    _loss(out, state).backward()
    grad = layer.weight_hh_l0.grad
    assert grad is not None and grad.abs().sum() > 0
    assert torch.all(grad[mask == 0] == 0)  # dropped connections get no gradient


def test_bf16_precision_is_close_to_fp32() -> None:
    torch.manual_seed(4)
    for kind, (cls, _) in KINDS.items():
        fp32 = cls(IN, H)
        outs, grads = [], []
        for impl in IMPLS:
            bf16 = cls(IN, H, impl=impl, precision="bf16")
            bf16.load_state_dict(fp32.state_dict())
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(T, B, IN, requires_grad=True, generator=gen)
            out, s = bf16(x)
            out_ref, _ = fp32(x)
            torch.testing.assert_close(out, out_ref, atol=3e-2, rtol=0, msg=kind)
            assert out.dtype == torch.float32 and all(t.dtype == torch.float32 for t in _flat(s))
            g = torch.autograd.grad(_loss(out, s), [x, *bf16.parameters()])
            assert all(torch.isfinite(t).all() and t.dtype == torch.float32 for t in g)
            outs.append(out)
            grads.append(g)
        torch.testing.assert_close(outs[0], outs[1], atol=2e-2, rtol=0)
        _assert_all_close(grads[0], grads[1], 5e-2)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_inference_path_is_close_to_fp32_and_returns_fp32(kind: str) -> None:
    # Without gradients the LSTM runs torch's fused kernel (bf16 under autocast there).
    torch.manual_seed(5)
    layer = KINDS[kind][0](IN, H, precision="bf16")
    x = torch.randn(T, B, IN)
    hx = _state(kind, 1, torch.float32, grad=False)
    out_ref, s_ref = layer(x, hx)  # the training path (saves for BPTT)
    for context in (torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16)):
        with torch.no_grad(), context:
            out, s = layer(x, hx)
        assert out.dtype == torch.float32 and all(t.dtype == torch.float32 for t in _flat(s))
        _assert_all_close([out, *_flat(s)], [out_ref, *_flat(s_ref)], 3e-2)


def test_onednn_path_matches_plain_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    x = torch.randn(T, B, IN, requires_grad=True)
    for cls in (ManualLSTM, ManualGRU):
        layer = cls(IN, H)
        results = []
        for use in (True, False):
            monkeypatch.setattr(manual_common, "USE_ONEDNN", use)
            out, s = layer(x)
            results.append([out, *torch.autograd.grad(_loss(out, s), [x, *layer.parameters()])])
        _assert_all_close(results[0], results[1], 1e-5)


def test_window_function_gradcheck() -> None:
    torch.manual_seed(6)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    args = (rand(4, 2, 4 * 3), rand(2, 3), rand(2, 3), rand(4 * 3, 3), None)
    assert torch.autograd.gradcheck(manual_lstm._LSTMWindow.apply, args)
    args = (rand(4, 2, 3 * 3), rand(2, 3), rand(3 * 3, 3), rand(3 * 3), None)
    assert torch.autograd.gradcheck(manual_gru._GRUWindow.apply, args)


def test_mogrifier_rounds_zero_equals_plain_lstm() -> None:
    torch.manual_seed(7)
    mog = MogrifierLSTM(IN, H, rounds=0).double()
    ref = nn.LSTM(IN, H).double()
    ref.load_state_dict(mog.state_dict(), strict=True)
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    hx = _state("lstm", 1, torch.float64)
    out1, s1 = mog(x, hx)
    out2, s2 = ref(x, hx)
    _assert_all_close([out1, *s1], [out2, *s2], 1e-10)
    g1 = torch.autograd.grad(_loss(out1, s1), [x, *hx, *mog.parameters()])
    g2 = torch.autograd.grad(_loss(out2, s2), [x, *hx, *ref.parameters()])
    _assert_all_close(g1, g2, 1e-10)


def test_mogrifier_layer_equals_looped_cell() -> None:
    torch.manual_seed(8)
    layer = MogrifierLSTM(IN, H, rounds=5, rank=2).double()
    cell = MogrifierLSTMCell(IN, H, rounds=5, rank=2).double()
    cell.load_state_dict(
        {k.replace("_l0", ""): v for k, v in layer.state_dict().items()}, strict=True
    )
    x = torch.randn(T, B, IN, dtype=torch.float64)
    out, (h, c) = layer(x)
    state = None
    for t in range(T):
        state = cell(x[t], state)
        torch.testing.assert_close(out[t], state[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(h[0], state[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(c[0], state[1], atol=1e-10, rtol=0)


def test_mogrifier_low_rank_shapes_and_lstm_keys() -> None:
    mog = MogrifierLSTM(IN, H, rounds=4, rank=3)
    shapes = {k: tuple(v.shape) for k, v in mog.state_dict().items()}
    assert shapes["weight_ih_l0"] == (4 * H, IN) and shapes["weight_hh_l0"] == (4 * H, H)
    assert shapes["mog_q.1.left"] == (IN, 3) and shapes["mog_q.1.right"] == (3, H)
    assert shapes["mog_r.1.left"] == (H, 3) and shapes["mog_r.1.right"] == (3, IN)
    assert len(mog.mog_q) == 2 and len(mog.mog_r) == 2
    missing, unexpected = nn.LSTM(IN, H).load_state_dict(mog.state_dict(), strict=False)
    assert not missing and all(k.startswith("mog_") for k in unexpected)


def test_mogrifier_functional_call_with_dropped_weight_hh() -> None:
    torch.manual_seed(9)
    mog = MogrifierLSTM(IN, H, rounds=3)
    x = torch.randn(T, B, IN)
    dropped = F.dropout(mog.weight_hh_l0, p=0.5, training=True)
    out, _ = functional_call(mog, {"weight_hh_l0": dropped}, (x, None))
    assert not torch.allclose(out, mog(x)[0])
    out.sum().backward()
    assert mog.weight_hh_l0.grad is not None and mog.weight_hh_l0.grad.abs().sum() > 0


def test_tiny_mogrifier_language_model_learns_a_repeating_sequence() -> None:
    torch.manual_seed(10)
    vocab = 6
    stream = torch.arange(vocab).repeat(8)  # 0 1 2 3 4 5 0 1 ...
    inputs, targets = stream[:-1].view(-1, 1), stream[1:].view(-1, 1)  # (T, 1)

    embed = nn.Embedding(vocab, 8)
    rnn = MogrifierLSTM(8, 16, rounds=4, rank=4)
    head = nn.Linear(16, vocab)
    params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.03)
    for _ in range(30):
        opt.zero_grad()
        out, _ = rnn(embed(inputs))  # (T, 1, 16)
        loss = F.cross_entropy(head(out).view(-1, vocab), targets.view(-1))
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # from ln(6) = 1.79; about 0.01 after 30 steps


@pytest.mark.parametrize(
    "make",
    [
        lambda: ManualLSTM(0, 4),
        lambda: ManualLSTM(4, -1),
        lambda: ManualGRU(-3, 4),
        lambda: ManualGRU(4, 0),
        lambda: MogrifierLSTM(0, 4),
        lambda: MogrifierLSTM(4, 4, rounds=-2),
        lambda: MogrifierLSTM(4, 4, rank=0),
        lambda: ManualLSTM(4, 4, impl="cuda"),
        lambda: ManualGRU(4, 4, precision="fp16"),
    ],
)
def test_bad_arguments_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_inputs_raise_value_error(kind: str) -> None:
    layer = KINDS[kind][0](IN, H)
    with pytest.raises(ValueError, match="input"):
        layer(torch.randn(T, B, IN + 1))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.randn(0, B, IN))
    bad = torch.zeros(2, B, H)  # two layers' worth of state for a one-layer module
    with pytest.raises(ValueError, match="state"):
        layer(torch.randn(T, B, IN), (bad, bad) if kind == "lstm" else bad)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_keeps_no_reference_to_its_inputs(kind: str) -> None:
    # A cache keyed on the input tensor once kept every window's input (and its autograd
    # graph) alive: memory grew by megabytes per training step.
    import gc
    import weakref

    layer = KINDS[kind][0](IN, H)
    x = torch.randn(T, B, IN, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = layer(x)
    out.float().sum().backward()
    ref = weakref.ref(x)
    del x, out, state
    gc.collect()
    assert ref() is None
