import pytest
import torch
import torch.nn.functional as F

from helpers import assert_gradients_align, skip_without_bf16_kernels
from lstmlm.nn.linear_ce import ROWS_PER_BLOCK, linear_cross_entropy

N, D, V = ROWS_PER_BLOCK * 2 + 5, 12, 37  # more than one block, the last one partial


def _inputs(dtype=torch.float64, bias=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    y = torch.randint(0, V, (N,), generator=g)
    return x, w, b, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_linear_then_cross_entropy(reduction, bias):
    x, w, b, y = _inputs(bias=bias)
    ours = linear_cross_entropy(x, w, b, y, reduction)
    theirs = F.cross_entropy(F.linear(x, w, b), y, reduction=reduction)
    # The node computes its softmax in fp32 whatever the input dtype.
    assert torch.allclose(ours.double(), theirs, atol=1e-5, rtol=1e-5)
    weights = torch.linspace(0.5, 2.0, N, dtype=torch.float64) if reduction == "none" else 1.0
    params = [x, w] + ([b] if bias else [])
    g_ours = torch.autograd.grad((ours * weights).sum(), params)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), params)
    for a, c in zip(g_ours, g_theirs, strict=True):
        assert torch.allclose(a, c, atol=1e-5, rtol=1e-4)


def test_bf16_matmuls_stay_close_to_fp32():
    x, w, b, y = _inputs(torch.float32)
    ours = linear_cross_entropy(x, w, b, y, mm_dtype=torch.bfloat16)
    theirs = F.cross_entropy(F.linear(x, w, b), y)
    assert abs(ours.item() - theirs.item()) < 0.05 * theirs.item()
    gx, gw = torch.autograd.grad(ours, [x, w])
    tx, tw = torch.autograd.grad(theirs, [x, w])
    assert gx.dtype == x.dtype and gw.dtype == w.dtype
    assert torch.nn.functional.cosine_similarity(gx.flatten(), tx.flatten(), dim=0) > 0.99
    assert torch.nn.functional.cosine_similarity(gw.flatten(), tw.flatten(), dim=0) > 0.99


def test_bad_shapes_and_reduction_are_value_errors():
    x, w, b, y = _inputs()
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(x, w, b, y[:-1])
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(x, w, b, y, "avg")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mm_dtype", [None, torch.bfloat16])
def test_forward_only_path_gives_the_training_path_numbers(bias, mm_dtype):
    g = torch.Generator().manual_seed(1)
    n = ROWS_PER_BLOCK * 2 + 3  # more than one block, the last one partial
    x, w = torch.randn(n, D, generator=g), torch.randn(V, D, generator=g)
    b = torch.randn(V, generator=g) if bias else None
    y = torch.randint(0, V, (n,), generator=g)
    with torch.inference_mode():
        fast = linear_cross_entropy(x, w, b, y, "none", mm_dtype)
    with torch.enable_grad():
        trained = linear_cross_entropy(x.requires_grad_(), w, b, y, "none", mm_dtype)
    assert trained.requires_grad and not fast.requires_grad
    assert torch.allclose(fast, trained.detach(), atol=1e-5, rtol=1e-5)
    if mm_dtype is None:
        plain = F.cross_entropy(F.linear(x.detach(), w, b), y, reduction="none")
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)


def test_an_underflowing_target_gives_the_exact_loss_and_gradient():
    x = torch.tensor([[1.0]], requires_grad=True)
    w = torch.tensor([[200.0], [-200.0]], requires_grad=True)  # p(target 1) = e^-400
    y = torch.tensor([1])
    loss = linear_cross_entropy(x, w, None, y)
    assert loss.item() == pytest.approx(400.0, rel=1e-5)  # p underflows fp32; NLL does not
    loss.backward()
    x2, w2 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.cross_entropy(F.linear(x2, w2), y).backward()
    assert torch.allclose(x.grad.double(), x2.grad) and torch.allclose(w.grad.double(), w2.grad)
    with torch.inference_mode():  # the forward-only path too
        assert linear_cross_entropy(x, w, None, y).item() == pytest.approx(400.0, rel=1e-5)
    inf = linear_cross_entropy(x.detach(), torch.tensor([[float("inf")], [0.0]]), None, y)
    assert not torch.isfinite(inf)  # blown-up weights show in the loss (the NaN guard)


def test_the_kept_transposed_weight_follows_every_change_of_the_weight():
    from lstmlm.nn.linear_ce import transposed_weight

    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(9, D, generator=g), torch.nn.Parameter(torch.randn(V, D, generator=g))
    y = torch.randint(0, V, (9,), generator=g)
    first = transposed_weight(w, torch.bfloat16)
    assert first.shape == (D, V) and first.is_contiguous()
    assert transposed_weight(w, torch.bfloat16) is first  # kept while unchanged
    with torch.inference_mode():
        before = linear_cross_entropy(x, w, None, y, "none", torch.bfloat16)
    with torch.no_grad():
        w.mul_(-1.0)  # what an optimizer step or load_state_dict does: in place
    assert transposed_weight(w, torch.bfloat16) is not first
    with torch.inference_mode():
        after = linear_cross_entropy(x, w, None, y, "none", torch.bfloat16)
    with torch.enable_grad():
        fresh = linear_cross_entropy(x, w, None, y, "none", torch.bfloat16)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, fresh.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_bf16_kernel_path_matches_fp32_on_the_same_rounded_operands(bias):
    # The C path (GEMM, softmax_xent, the gradient in both layouts) against torch in fp32
    # on bf16-rounded x and weight: only the scores' bf16 rounding and the gradients'
    # bf16 products differ.
    skip_without_bf16_kernels()
    g = torch.Generator().manual_seed(4)
    n, d, v = 2 * 80 + 3, 40, 170  # odd rows, partial blocks of 80 and 16 columns
    x = torch.randn(n, d, generator=g).bfloat16().float().requires_grad_()
    w = torch.randn(v, d, generator=g).bfloat16().float().requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_() if bias else None
    y = torch.randint(0, v, (n,), generator=g)
    ours = linear_cross_entropy(x, w, b, y, "none", torch.bfloat16)
    theirs = F.cross_entropy(F.linear(x, w, b), y, reduction="none")
    assert torch.allclose(ours, theirs, atol=0.05, rtol=0.01)
    assert_gradients_align(ours, theirs, [x, w] + ([b] if bias else []))


def test_bf16_kernel_path_shows_blown_up_weights_and_refuses_bad_targets():
    skip_without_bf16_kernels()
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    w[2, 0] = float("inf")
    y = torch.tensor([0, 1, 2, 3])
    loss = linear_cross_entropy(x, w.requires_grad_(), None, y, "mean", torch.bfloat16)
    assert not torch.isfinite(loss)
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(
            x, torch.randn(6, 8), None, torch.tensor([0, 1, 2, 6]), "mean", torch.bfloat16
        )
